"""Why a box of phase-binned CBCT can prefer the wrong alignment, and what artefact matching changes.

For every misaligned and control box of the training cases (the sweep's cases and sessions, after
ISO-100), the native similarity (MIND-SSC, 2 mm pre-smoothing) is evaluated in the box at the true
correction (truth minus the current field) and at no correction; ``gain`` = 1 - cost(truth) / cost(0),
the fraction of the box's dissimilarity the truth explains (negative: the images agree better at the
wrong alignment). A translation search (as native RSO's start) gives the box TRE a constant shift reaches.
Image pairs compared:

* ``cbct``: the case's two CBCT phases, as RSO sees them;
* ``ct_fixed`` / ``ct_moving``: the clean CT on one side (the other side's artefacts only);
* ``moving_*``: the moving phase re-simulated from its CT, against the case's fixed CBCT: as the case
  (``resimulated``), without scatter, without noise, with 1.6x the views, and from the fixed phase's
  own views (``fixed_geometry``: the same streak directions in both);
* ``matched``: both CBCTs seen through both phases' views (rso.core.projection.matching); ``matched_linear``:
  the same without clipping the reprojected streaks that dip below air.

    python scripts/streak_study.py --out bench/results/streak_study.json

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the sweep's cases and sessions
from sweep_rso import CASES, case_folder, iso_session, sessions_dir  # noqa: E402

from rso.core.geometry import upsample_field  # noqa: E402
from rso.core.native import Refinement, build_problem, correction_tensor  # noqa: E402
from rso.core.projection.matching import match_artefacts, reproject  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import RSOSettings  # noqa: E402
from rso.simulation.cbct import CBCTParams, phase_angles, simulate_cbct  # noqa: E402

# the native defaults' similarity and knobs, without the guard or the return to an earlier state
SETTINGS = RSOSettings(
    similarity="mind",
    control_spacing_mm=8.0,
    smoothness=3.0,
    step_mm=0.3,
    min_gain=0.0,
    presmooth_mm=2.0,
    returns=False,
)


def pairs_of(session, folder: Path, phase: int, preset: str) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    read = lambda name: sitk.ReadImage(str(folder / name), sitk.sitkFloat32)  # noqa: E731
    ct_fixed, ct_moving = read("ct_phase0.nii.gz"), read(f"ct_phase{phase}.nii.gz")
    params = CBCTParams.clinical() if preset == "clinical" else CBCTParams()
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    placement = session.pair.placement
    variants = {
        "moving_resimulated": (params, phase),
        "moving_no_scatter": (dataclasses.replace(params, scatter_to_primary=0.0), phase),
        "moving_no_noise": (dataclasses.replace(params, photons_per_mm2=0.0), phase),
        "moving_more_views": (dataclasses.replace(params, projections=int(params.projections * 1.6)), phase),
        "moving_fixed_geometry": (params, 0),
    }
    pairs = {
        "cbct": (session.fixed, session.moving),
        "ct_fixed": (ct_fixed, session.moving),
        "ct_moving": (session.fixed, ct_moving),
        "matched": match_artefacts(session.fixed, session.moving, session.geometry, placement),
        "matched_linear": (
            reproject(session.fixed, session.geometry[1], placement, clip_below_air=False),
            reproject(session.moving, session.geometry[0], placement, clip_below_air=False),
        ),
    }
    for name, (cbct_params, views_phase) in variants.items():
        pairs[name] = (session.fixed, simulate_cbct(ct_moving, views_phase, 10, cbct_params, rng()))
    return pairs


def box_row(session, pair, box) -> dict:
    state = session.state
    problem = build_problem(
        pair,
        box,
        15.0,
        session.grid,
        (session.grid.voxels_to_mm(state.field), state.patches),
        torch.device("cpu"),
    )
    truth = sitk.GetArrayFromImage(upsample_field(session.truth, problem.window.reference_image())).astype(
        np.float32
    )
    correction = truth - problem.current_mm
    inside = problem.box.slices
    refinement = Refinement(problem, SETTINGS)
    with torch.no_grad():
        cost_zero = float(refinement.similarity(torch.zeros_like(correction_tensor(correction))))
        cost_truth = float(refinement.similarity(correction_tensor(correction)))
    shift = refinement.search_translation()
    return {
        "gain_at_truth": 1.0 - cost_truth / cost_zero,
        "box_tre_before_mm": float(np.linalg.norm(correction[inside], axis=-1).mean()),
        "box_tre_after_search_mm": float(np.linalg.norm(correction[inside] - shift, axis=-1).mean()),
    }


def study(out: Path) -> dict:
    rows = []
    for anatomy, seed, preset, phase in CASES:
        folder = case_folder(anatomy, seed, preset, phase)
        session = iso_session(folder, phase, sessions_dir(False), matched_iso=False)
        pairs = pairs_of(session, folder, phase, preset)
        for kind in ("misaligned", "control"):
            for index, box in enumerate(pick_boxes(session, kind, 2, 40.0, seed=seed)):
                for name, pair in pairs.items():
                    rows.append(
                        {
                            "case": [anatomy, seed, preset, phase],
                            "kind": kind,
                            "box": index,
                            "pair": name,
                            **box_row(session, pair, box),
                        }
                    )
                print(f"{anatomy} {preset} {kind} {index} done", flush=True)
    summary = summarise(rows)
    report = {
        "settings": dataclasses.asdict(SETTINGS),
        "rows": rows,
        "summary": summary,
        "views": {
            "clinical": len(phase_angles(0, 10, CBCTParams.clinical())),
            "local": len(phase_angles(0, 10)),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    return report


def summarise(rows: list[dict]) -> list[dict]:
    """Per (preset, box kind, pair): the median gain at the truth, how often it is negative, the search's
    TRE."""
    table = []
    keys = sorted({(r["case"][2], r["kind"], r["pair"]) for r in rows})
    for preset, kind, pair in keys:
        part = [r for r in rows if (r["case"][2], r["kind"], r["pair"]) == (preset, kind, pair)]
        table.append(
            {
                "preset": preset,
                "kind": kind,
                "pair": pair,
                "boxes": len(part),
                "median_gain_at_truth": float(np.median([r["gain_at_truth"] for r in part])),
                "truth_worse_than_zero": sum(r["gain_at_truth"] < 0 for r in part),
                "median_box_tre_before_mm": float(np.median([r["box_tre_before_mm"] for r in part])),
                "median_box_tre_after_search_mm": float(
                    np.median([r["box_tre_after_search_mm"] for r in part])
                ),
            }
        )
    print(
        "preset | kind | pair | boxes | median gain at truth | truth worse than zero | "
        "box TRE before -> search (mm)"
    )
    for t in table:
        print(
            f"{t['preset']} | {t['kind']} | {t['pair']} | {t['boxes']} | {t['median_gain_at_truth']:+.2f} | "
            f"{t['truth_worse_than_zero']} | {t['median_box_tre_before_mm']:.2f} -> "
            f"{t['median_box_tre_after_search_mm']:.2f}"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/streak_study.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    study(args.out)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
