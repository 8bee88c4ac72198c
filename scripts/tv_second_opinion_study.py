"""The second opinion on full-fan TV phases with today's model (bench/sweep/tv-second-opinion/plan.md).

For each XVI-like TV pair of the plan, registered with its geometry files as the product's default path
does (the general model; ISO keeps its field on TV phases), three misaligned, two residual and three
control boxes (40 mm, picked on that field). Each box is stepped with native RSO's defaults (on full-fan TV
phases the scan rule skips the second opinion); a step that is kept is stepped again with the scan rule off,
which on these phases changes only that: the second opinion runs and may decline it. Per box: its TRE before,
after each rule, and the second opinion's disagreement (mm). The summary counts, over the boxes, the steps
the second opinion declines that helped or harmed (box TRE better or worse by more than 0.5 mm).

    python scripts/tv_second_opinion_study.py --out bench/sweep/tv-second-opinion/study.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_tv_study import CASES as ISO_TV_CASES  # noqa: E402
from iso_tv_study import case_pairs  # noqa: E402

from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import RSOSettings  # noqa: E402

# the plan's training cases: the XVI-like TV pairs of bench/sweep/iso-tv/ (training anatomies only)
CASES = tuple(case for case in ISO_TV_CASES if case.preset == "xvi-tv")
BOXES = (("misaligned", 3), ("residual", 2), ("control", 3))
BOX_MM = 40.0
CHANGE_MM = 0.5  # a step helped or harmed its box where the box's TRE changed by more than this


def step(session, box, settings: RSOSettings, before: float) -> dict:
    """One box step from the session's current state, undone after: box TRE (mm) and the guard's record."""
    record = session.rso(box, settings)
    after = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
    if record.accepted:
        session.undo()
    guard = record.guard or {}
    return {
        "kept": bool(record.accepted),
        "tre": round(after, 4),
        "declined": record.declined,
        "disagreement_mm": guard.get("disagreement_mm"),
    }


def score_box(session, kind: str, box) -> dict:
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    row = {"kind": kind, "ras": box.ras_corners, "tre_before": round(before, 4)}
    row["default"] = step(session, box, RSOSettings(), before)
    # the scan rule off adds only the second opinion here; a declined step would be declined again
    row["second_opinion"] = (
        step(session, box, RSOSettings(scan_rule=False), before) if row["default"]["kept"] else row["default"]
    )
    return row


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    session = start_session(engine, case_inputs(folder, moving, tv_files=True), network=network)
    session.general()
    session.iso()  # declined on TV phases with their files: the general model's field stays
    boxes = [(kind, box) for kind, count in BOXES for box in pick_boxes(session, kind, count, BOX_MM)]
    return {
        "case": folder.name,
        "phase": moving,
        "whole_tre_mm": round(session.metrics()["tre_mm"]["mean"], 4),
        "boxes": [score_box(session, kind, box) for kind, box in boxes],
    }


def change(box: dict, rule: str) -> float:
    return box[rule]["tre"] - box["tre_before"]


def summary(rows: list[dict]) -> list[dict]:
    """The plan's rule: the second opinion on full-fan TV phases (C) where it declines at least one step that
    harmed its box and no more steps that helped than steps that harmed; else nothing changes."""
    boxes = [box for row in rows for box in row["boxes"]]
    lost = [box for box in boxes if box["default"]["kept"] and not box["second_opinion"]["kept"]]
    helped = sum(change(box, "default") < -CHANGE_MM for box in lost)
    harmed = sum(change(box, "default") > CHANGE_MM for box in lost)
    adopt = harmed >= 1 and helped <= harmed
    per_kind = {}
    for kind, _ in BOXES:
        mine = [box for box in boxes if box["kind"] == kind]
        per_kind[kind] = {
            rule: {
                "median_change_mm": round(float(np.median([change(b, rule) for b in mine])), 4),
                "worst_change_mm": round(float(max(change(b, rule) for b in mine)), 4),
                "helped": int(sum(change(b, rule) < -CHANGE_MM for b in mine)),
                "harmed": int(sum(change(b, rule) > CHANGE_MM for b in mine)),
            }
            for rule in ("default", "second_opinion")
        }
        per_kind[kind]["boxes"] = len(mine)
    return [
        {
            "pairs": len(rows),
            "boxes": len(boxes),
            "kept_by_default": int(sum(box["default"]["kept"] for box in boxes)),
            "declined_by_second_opinion": len(lost),
            "of_them_helped": int(helped),
            "of_them_harmed": int(harmed),
            "per_kind": per_kind,
            "verdict": "C: the second opinion on full-fan TV phases" if adopt else "nothing changes",
        }
    ]


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, case_pairs(CASES), score_pair, summary))
