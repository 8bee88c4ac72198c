"""ISO on the images as given where matched ISO is declined, on training anatomies
(bench/sweep/iso-fallback/plan.md).

For each of the training anatomies' console scans at seed 127 and moving phases 1, 3, 5, 7, 9, one session
without geometry files: the general model, then ISO-100 under its default guard (the axis share). Today's
matched outcome is read from the ISO margin study (matched ISO kept where its gain as given exceeds 0.20).
Where the candidate would use the as-given field (matched declined, the axis share kept), the benchmark's
boxes are picked on it and each box's TRE (mm) is recorded under it and under the general model's field.

    python scripts/iso_fallback_study.py --out bench/sweep/iso-fallback/study.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_margin_study import console_folders  # noqa: E402
from iso_returns_study import (  # noqa: E402
    BOX_MM,
    BOX_SEED,
    HARM_MM,
    TODAY_MARGIN,
    box_tre,
    margin_study_row,
)

from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import ISOSettings  # noqa: E402

MOVING_PHASES = (1, 3, 5, 7, 9)  # the plan: odd phases only
BOXES = (("misaligned", 2), ("control", 2))


def pairs(thorax: Path | None) -> list[tuple[Path, int]]:
    return [(folder, moving) for folder in console_folders(thorax) for moving in MOVING_PHASES]


def matched_today(case: str, moving: int) -> dict:
    """Today's matched path on the pair, from the ISO margin study: its TRE and whether ISO was kept."""
    row = margin_study_row(case, moving)
    kept = row["given_gain"] > TODAY_MARGIN
    return {
        "matched_general_tre_mm": row["general_tre_mm"],
        "matched_kept": kept,
        "today_tre_mm": row["iso_tre_mm"] if kept else row["general_tre_mm"],
    }


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    """The as-given ISO-100 under the axis share on one pair, and its boxes where the candidate uses it."""
    inputs = {**case_inputs(folder, moving), "fixed_geometry": None, "moving_geometry": None}
    session = start_session(engine, inputs, network=network)
    general = session.general().metrics["tre_mm"]["mean"]
    iso = session.iso(ISOSettings(iterations=100))
    notes = iso.params  # ISO's guard reports through the step's parameters
    row = {
        "case": folder.name,
        "phase": moving,
        **matched_today(folder.name, moving),
        "general_tre_mm": round(general, 4),
        "given_iso_tre_mm": round(iso.metrics["tre_mm"]["mean"], 4),
        "axis_share": notes.get("axis_share"),
        "given_kept": notes.get("kept") != "start",
        "boxes": [],
    }
    if row["matched_kept"] or not row["given_kept"]:
        return row
    general_field = session.state_field(1)
    for kind, count in BOXES:
        for index, box in enumerate(pick_boxes(session, kind, count, BOX_MM, BOX_SEED)):
            under_general = session.metrics(general_field, box=box)["tre_mm_box"]["mean"]
            row["boxes"].append(
                {
                    "kind": kind,
                    "index": index,
                    "given_iso_mm": box_tre(session, box),
                    "general_mm": round(under_general, 4),
                }
            )
    return row


def summary(rows: list[dict]) -> dict:
    """Today's and the candidate's whole-lung TRE over ``rows``, the worst pair and box; qualification."""
    today = np.array([r["today_tre_mm"] for r in rows])
    used = [not r["matched_kept"] and r["given_kept"] for r in rows]
    candidate = np.where(used, [r["given_iso_tre_mm"] for r in rows], today)
    boxes = [b["given_iso_mm"] - b["general_mm"] for r in rows for b in r["boxes"]]
    worst_box = max(boxes, default=0.0)
    result = {
        "pairs": len(rows),
        "fallback_used": int(sum(used)),
        "today_mean_tre_mm": round(float(today.mean()), 4),
        "candidate_mean_tre_mm": round(float(candidate.mean()), 4),
        "worst_pair_change_mm": round(float(np.max(candidate - today)), 4),
        "best_pair_change_mm": round(float(np.min(candidate - today)), 4),
        "boxes": len(boxes),
        "boxes_worse_than_general": sum(change > HARM_MM for change in boxes),
        "worst_box_change_mm": round(float(worst_box), 4),
    }
    result["qualifies"] = bool(
        candidate.mean() < today.mean() and result["worst_pair_change_mm"] <= HARM_MM and worst_box <= HARM_MM
    )
    return result


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, pairs, score_pair, summary))
