"""ISO on TV phases, on training anatomies (bench/sweep/iso-tv/plan.md).

For each TV pair of the plan, registered with its geometry files as the product's default path does: the
general model, then ISO-100 as it ran before this study (on TV phases nothing is matched and the guard let
every fit through; it now declines them, so the study turns it off). Per pair: whole-lung TRE (mm) of both
fields and, over every box position the benchmark may place, the worst change of the box's mean TRE from
the general model's field to ISO's.

    python scripts/iso_tv_study.py --out bench/sweep/iso-tv/study.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_fade_study import as_field  # noqa: E402
from iso_returns_study import BOX_MM, HARM_MM  # noqa: E402

from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.bench.cases import case_folder  # noqa: E402
from rso.evaluation.box_kinds import box_tre_map  # noqa: E402
from rso.evaluation.case_sets import CaseSpec  # noqa: E402
from rso.settings import ISOSettings  # noqa: E402

# the plan's training cases
CASES = (
    CaseSpec("cxr", 128, 5, "xvi-tv"),
    CaseSpec("lung1", 128, 5, "xvi-tv"),
    CaseSpec("cxr", 129, 5, "xvi-tv"),
    CaseSpec("lung1", 129, 5, "xvi-tv"),
    CaseSpec("cxr", 128, 3, "truebeam-tv"),
    CaseSpec("lung1", 128, 3, "truebeam-tv"),
)


def case_pairs(cases: tuple[CaseSpec, ...]):
    """``pairs_of`` for ``run_pair_study``: each case's folder (simulated on first use) and moving phase."""
    return lambda _thorax: [
        (case_folder(c.anatomy, c.seed, c.preset, c.moving_phase), c.moving_phase) for c in cases
    ]


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    session = start_session(engine, case_inputs(folder, moving, tv_files=True), network=network)
    session.general()
    general = session.field_voxels.copy()
    general_map, allowed = box_tre_map(as_field(session, general), BOX_MM)
    # ISO as fitted: before this study's change the guard let every TV fit through, and now it declines them
    session.iso(ISOSettings(guard=False))
    iso = session.field_voxels.copy()
    change = box_tre_map(as_field(session, iso), BOX_MM)[0] - general_map
    return {
        "case": folder.name,
        "phase": moving,
        "general_tre_mm": round(session.metrics(general)["tre_mm"]["mean"], 4),
        "iso_tre_mm": round(session.metrics(iso)["tre_mm"]["mean"], 4),
        "iso_changed_field": bool(np.abs(iso - general).max() > 0),
        "worst_box_change_mm": round(float(change[allowed].max()), 4),
        "positions_worse": int((change[allowed] > HARM_MM).sum()),
        "positions": int(allowed.sum()),
    }


def summary(rows: list[dict]) -> dict:
    """The plan's rule over ``rows``: B (ISO declined on TV phases) or A (today), or nothing."""
    general = float(np.mean([row["general_tre_mm"] for row in rows]))
    iso = float(np.mean([row["iso_tre_mm"] for row in rows]))
    harmed = sum(row["worst_box_change_mm"] > HARM_MM for row in rows)
    if iso > general and harmed >= 2:
        verdict = "B: ISO declined on TV phases"
    elif iso < general and harmed == 0:
        verdict = "A: ISO as fitted stays"
    else:
        verdict = "neither: nothing changes"
    return {
        "pairs": len(rows),
        "general_mean_tre_mm": round(general, 4),
        "iso_mean_tre_mm": round(iso, 4),
        "pairs_with_a_box_worse_than_general": harmed,
        "worst_box_change_mm": round(max(row["worst_box_change_mm"] for row in rows), 4),
        "verdict": verdict,
    }


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, case_pairs(CASES), score_pair, lambda rows: [summary(rows)]))
