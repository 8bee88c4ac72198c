"""ISO's margin and native RSO's returns, chosen together on training anatomies
(bench/sweep/iso-margin-returns/plan.md).

For each training pair on which matched ISO-100's gain as given exceeds the lower margin (the ISO margin
study's ``study.jsonl``), one session: the general model, ISO-100 on the matched pair with its guard off,
the benchmark's boxes picked on ISO's field, and per box native RSO (default settings, matched) in three
arms, each step undone before the next: A (today: margin 0.20, returns on), B (margin 0.05, returns on),
C (margin 0.05, returns off). Box TRE (mm) under each start and after each arm; each arm's guard.

    python scripts/iso_returns_study.py --out bench/sweep/iso-margin-returns/study.jsonl
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_margin_study import console_folders  # noqa: E402

from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.options import ISO_MIN_GIVEN_GAIN  # noqa: E402
from rso.settings import ISOSettings, RSOSettings  # noqa: E402

MARGIN_STUDY = Path(__file__).resolve().parents[1] / "bench/sweep/iso-margin-four-patient/study.jsonl"
TODAY_MARGIN, LOW_MARGIN = ISO_MIN_GIVEN_GAIN, 0.05
BOXES = (("misaligned", 2), ("residual", 1), ("control", 2))  # the benchmark's default
BOX_MM, BOX_SEED = 40.0, 127  # the benchmark's box side, and its seed (the case's)
HARM_MM = 0.5  # #20: no control or residual box worse than its start by more than this
CONTROL_MEDIAN_MM = 0.1  # #20: the control boxes' median change at most this
ARMS = ("A", "B", "C")


def kept_pairs(thorax: Path | None) -> list[tuple[Path, int]]:
    """The training pairs on which ISO's gain as given exceeds LOW_MARGIN (the margin study's rows)."""
    kept = {(r["case"], r["phase"]) for r in margin_study_rows() if r["given_gain"] > LOW_MARGIN}
    return [
        (folder, moving)
        for folder in console_folders(thorax)
        for moving in range(1, 10)
        if (folder.name, moving) in kept
    ]


def box_tre(session, box) -> float:
    return round(session.metrics(box=box)["tre_mm_box"]["mean"], 4)


def rso_outcome(session, box, settings: RSOSettings) -> dict:
    """Native RSO on ``box`` from the session's state, undone afterwards: box TRE and the guard's verdict."""
    record = session.rso(box, settings)
    if record.accepted:
        session.undo()
    guard = record.guard or {}
    return {
        "tre_mm": round(record.metrics["tre_mm_box"]["mean"], 4),
        "declined": bool(record.declined),
        "gain": guard.get("gain"),
        "returned_to": guard.get("returned_to"),
    }


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    """The three arms on the benchmark's boxes of one pair (the plan)."""
    session = start_session(engine, case_inputs(folder, moving), network=network)
    general_tre = session.general().metrics["tre_mm"]["mean"]
    iso = session.iso(ISOSettings(iterations=100, guard=False))
    picked = [(k, i, b) for k, n in BOXES for i, b in enumerate(pick_boxes(session, k, n, BOX_MM, BOX_SEED))]
    boxes, on = [], RSOSettings()
    for kind, index, box in picked:
        boxes.append(
            {
                "kind": kind,
                "index": index,
                "iso_mm": box_tre(session, box),
                "B": rso_outcome(session, box, replace(on, returns=True)),
                "C": rso_outcome(session, box, replace(on, returns=False)),
            }
        )
    margin_gain = margin_study_row(folder.name, moving)["given_gain"]
    iso_kept_today = margin_gain > TODAY_MARGIN
    if not iso_kept_today:
        session.undo()  # back to the general model's field (bit-exact), where A starts
    for entry, (_, _, box) in zip(boxes, picked, strict=True):
        entry["general_mm"] = box_tre(session, box) if not iso_kept_today else None
        entry["A"] = rso_outcome(session, box, replace(on, returns=True))
    return {
        "case": folder.name,
        "phase": moving,
        "general_tre_mm": round(general_tre, 4),
        "iso_tre_mm": round(iso.metrics["tre_mm"]["mean"], 4),
        "margin_study_gain": margin_gain,
        "iso_kept_today": iso_kept_today,
        "boxes": boxes,
    }


@cache
def margin_study_rows() -> tuple[dict, ...]:
    """The ISO margin study's rows (general and matched ISO-100's TRE, ISO's gain as given), read once."""
    return tuple(json.loads(line) for line in MARGIN_STUDY.read_text().splitlines())


def margin_study_row(case: str, moving: int) -> dict:
    """The ISO margin study's row of one pair."""
    return next(r for r in margin_study_rows() if (r["case"], r["phase"]) == (case, moving))


def start_mm(pair: dict, entry: dict, arm: str) -> float:
    """The box TRE under the arm's start: ISO's field (B, C; A where today's margin keeps ISO), else the
    general model's."""
    if arm == "A" and not pair["iso_kept_today"]:
        return entry["general_mm"]
    return entry["iso_mm"]


def summary(rows: list[dict]) -> list[dict]:
    """Each arm over every box of ``rows``: mean box TRE (all, misaligned), harm, returns; qualification."""
    result = {}
    for arm in ARMS:
        tre, misaligned, control, harm, harm_vs_a, returns = [], [], [], [], [], 0
        for pair in rows:
            for entry in pair["boxes"]:
                after = entry[arm]["tre_mm"]
                tre.append(after)
                returns += entry[arm]["returned_to"] is not None
                change = after - start_mm(pair, entry, arm)
                if entry["kind"] == "misaligned":
                    misaligned.append(after)
                    continue
                if entry["kind"] == "control":
                    control.append(change)
                harm.append(change)
                harm_vs_a.append(after - entry["A"]["tre_mm"])
        result[arm] = {
            "arm": arm,
            "boxes": len(tre),
            "mean_box_tre_mm": round(float(np.mean(tre)), 4),
            "misaligned_mean_box_tre_mm": round(float(np.mean(misaligned)), 4),
            "control_median_change_mm": round(float(np.median(control)), 4),
            "should_not_move_worst_vs_start_mm": round(float(max(harm)), 4),
            "should_not_move_worst_vs_a_mm": round(float(max(harm_vs_a)), 4),
            "returns": returns,
        }
    today = result["A"]
    for arm in ("B", "C"):
        row = result[arm]
        row["qualifies"] = bool(
            row["should_not_move_worst_vs_start_mm"] <= HARM_MM
            and row["should_not_move_worst_vs_a_mm"] <= HARM_MM
            and row["control_median_change_mm"] <= CONTROL_MEDIAN_MM
            and row["misaligned_mean_box_tre_mm"] <= today["misaligned_mean_box_tre_mm"]
            and row["mean_box_tre_mm"] <= today["mean_box_tre_mm"]
        )
    return list(result.values())


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, kept_pairs, score_pair, summary))
