"""Do TV phases show a half-fan scan's motion better than its FDK phases, with today's model?
(bench/sweep/half-fan-advice/plan.md)

A declined box step on FDK phases of a half fan added advice: with the projections, TV phases show the
motion (``HALF_FAN_FDK_ADVICE``, chosen with the general model of 2026-12-05; since this study
``rso.core.projection.scan.HALF_FAN_FDK_NOTE``, which says why instead). For
each scan of the plan (the same breathing, the same truth), reconstructed both ways: the FDK phases with
their geometry files as the default path registers them (general model, ISO-100 matched, then native RSO
in three misaligned boxes of 40 mm picked on that field), and the TV phases with theirs (general model; ISO
keeps its field and the scan's rule declines box steps, so the same boxes stay as the general model left
them). Per pair: whole-lung TRE both ways; per box: its TRE on FDK phases before and after the step, and on
TV phases.

    python scripts/half_fan_advice_study.py --out bench/sweep/half-fan-advice/study.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_tv_study import case_pairs  # noqa: E402
from tv_second_opinion_study import BOX_MM, step  # noqa: E402

from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.bench.cases import case_folder  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.evaluation.case_sets import CaseSpec  # noqa: E402
from rso.settings import RSOSettings  # noqa: E402

# the plan's training scans, as FDK phases; each also as TV phases (the `truebeam-tv` preset, same seed)
CASES = tuple(CaseSpec(anatomy, seed, 3, "truebeam") for seed in (128, 129) for anatomy in ("cxr", "lung1"))
ADVICE_MM = 0.5  # the advice stays where TV phases leave the boxes at least this much nearer the truth


def box_tre(session, box) -> float:
    return session.metrics(box=box)["tre_mm_box"]["mean"]


def fdk_boxes(session) -> tuple[list, list[dict]]:
    """The default path's three misaligned boxes on FDK phases: the boxes, and each one's TRE (mm) before and
    after native RSO (the step undone after, so that every box starts from ISO-100's field)."""
    boxes, rows = pick_boxes(session, "misaligned", 3, BOX_MM), []
    for box in boxes:
        before = box_tre(session, box)
        stepped = step(session, box, RSOSettings(), before)
        rows.append({"ras": box.ras_corners, "fdk_before": round(before, 4), "declined": stepped["declined"]})
        rows[-1]["fdk_after"] = stepped["tre"]
    return boxes, rows


def tv_twin(folder: Path) -> Path:
    """The TV phases of the scan whose FDK phases are in ``folder`` (simulated on first use)."""
    (case,) = [c for c in CASES if case_folder(c.anatomy, c.seed, c.preset, c.moving_phase) == folder]
    return case_folder(case.anatomy, case.seed, "truebeam-tv", case.moving_phase)


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    fdk = start_session(engine, case_inputs(folder, moving), network=network)
    fdk.general()
    fdk.iso()
    boxes, rows = fdk_boxes(fdk)
    tv = start_session(engine, case_inputs(tv_twin(folder), moving, tv_files=True), network=network)
    tv.general()
    tv.iso()  # keeps the general model's field on TV phases
    for box, row in zip(boxes, rows):
        row["tv"] = round(box_tre(tv, tv.pair.box_from_ras(box.ras_corners)), 4)
    return {
        "case": folder.name,
        "phase": moving,
        "fdk_whole_tre_mm": round(fdk.metrics()["tre_mm"]["mean"], 4),
        "tv_whole_tre_mm": round(tv.metrics()["tre_mm"]["mean"], 4),
        "boxes": rows,
    }


def summary(rows: list[dict]) -> list[dict]:
    """The plan's rule: the advice stays where TV phases leave the misaligned boxes nearer the truth than the
    FDK phases' default path (after its box step) by a median of at least ADVICE_MM; else it is reworded."""
    boxes = [box for row in rows for box in row["boxes"]]
    gaps = [box["fdk_after"] - box["tv"] for box in boxes]
    keep = float(np.median(gaps)) >= ADVICE_MM
    return [
        {
            "pairs": len(rows),
            "boxes": len(boxes),
            "fdk_whole_mean_mm": round(float(np.mean([row["fdk_whole_tre_mm"] for row in rows])), 4),
            "tv_whole_mean_mm": round(float(np.mean([row["tv_whole_tre_mm"] for row in rows])), 4),
            "fdk_box_median_mm": round(float(np.median([box["fdk_after"] for box in boxes])), 4),
            "tv_box_median_mm": round(float(np.median([box["tv"] for box in boxes])), 4),
            "median_fdk_minus_tv_mm": round(float(np.median(gaps)), 4),
            "boxes_nearer_on_tv": int(sum(gap > 0 for gap in gaps)),
            "fdk_steps_kept": int(sum(box["declined"] is None for box in boxes)),
            "verdict": "the advice stays" if keep else "the advice is reworded: TV phases no nearer",
        }
    ]


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, case_pairs(CASES), score_pair, summary))
