"""Box steps on half-fan TV phases with today's model (bench/sweep/tv-half-fan/plan.md).

For each TrueBeam-like TV pair of the plan, registered with its geometry files as the product's default path
does (the general model; ISO keeps its field on TV phases), three misaligned, two residual and three control
boxes (40 mm, picked on that field). The scan's rule declines every box step there; each box is stepped with
the rule off instead, which on these phases changes only that: the guard judges the step, with its second
opinion. Per box: its TRE before and after, and the guard's record. The summary counts the steps the guard
keeps that helped or harmed their box (box TRE better or worse by more than 0.5 mm).

    python scripts/tv_half_fan_study.py --out bench/sweep/tv-half-fan/study.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_tv_study import case_pairs  # noqa: E402
from tv_second_opinion_study import BOX_MM, BOXES, CHANGE_MM, change, step  # noqa: E402

from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.evaluation.case_sets import CaseSpec  # noqa: E402
from rso.settings import RSOSettings  # noqa: E402

# the plan's training cases (training anatomies only): seed 128 from bench/sweep/iso-tv/, seed 129 new
CASES = tuple(
    CaseSpec(anatomy, seed, 3, "truebeam-tv") for seed in (128, 129) for anatomy in ("cxr", "lung1")
)


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    session = start_session(engine, case_inputs(folder, moving, tv_files=True), network=network)
    session.general()
    session.iso()  # declined on TV phases with their files: the general model's field stays
    boxes = [(kind, box) for kind, count in BOXES for box in pick_boxes(session, kind, count, BOX_MM)]
    rows = []
    for kind, box in boxes:
        before = session.metrics(box=box)["tre_mm_box"]["mean"]
        rows.append(
            {
                "kind": kind,
                "ras": box.ras_corners,
                "tre_before": round(before, 4),
                "rule_off": step(session, box, RSOSettings(scan_rule=False), before),
            }
        )
    return {
        "case": folder.name,
        "phase": moving,
        "whole_tre_mm": round(session.metrics()["tre_mm"]["mean"], 4),
        "boxes": rows,
    }


def summary(rows: list[dict]) -> list[dict]:
    """The plan's rule: box steps on half-fan TV phases (D) where the steps the guard keeps harm no box by
    more than 0.5 mm and help at least two misaligned boxes by more than that; else the decline stays."""
    boxes = [box for row in rows for box in row["boxes"]]
    kept = [box for box in boxes if box["rule_off"]["kept"]]
    harmed = [box for box in kept if change(box, "rule_off") > CHANGE_MM]
    helped = [box for box in kept if change(box, "rule_off") < -CHANGE_MM]
    misaligned_helped = sum(box["kind"] == "misaligned" for box in helped)
    adopt = not harmed and misaligned_helped >= 2
    return [
        {
            "pairs": len(rows),
            "boxes": len(boxes),
            "kept_by_the_guard": len(kept),
            "helped": {kind: sum(box["kind"] == kind for box in helped) for kind, _ in BOXES},
            "harmed": {kind: sum(box["kind"] == kind for box in harmed) for kind, _ in BOXES},
            "worst_change_mm": round(max((change(box, "rule_off") for box in boxes), default=0.0), 4),
            "verdict": "D: box steps on half-fan TV phases" if adopt else "the decline stays",
        }
    ]


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, case_pairs(CASES), score_pair, summary))
