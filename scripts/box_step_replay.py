"""Replay one benchmark box step and say what the box holds and which images prefer the step (#20).

From a benchmark arm record (``--record bench/results-.../arm_<case>_<kind><i>_rso_native.json``), the case
is opened as the benchmark opens it (with both geometry files for an FDK case), general model -> ISO-100
-> native RSO with the default settings on the recorded box. Printed and written as JSON (``--out``): the
box TRE before and after, the guard's record, the correction's mean in the box (LPS mm), the true
displacement's mean along each axis in the box's lung voxels and in its other voxels (a box on a sliding
boundary shows two motions), and the lung share of the box. Then the native similarity's gain of the
step's correction and of the true one (1 - cost(correction) / cost(0), as ``scripts/conebeam_streak_study.py``
measures it) on five pairs: the clean CT phases, the CBCT phases as given, artefact-matched, each CT
phase noiselessly through its own phase's geometry, both through the fixed phase's, and each phase as
given against the other through its geometry (``half_fixed``, ``half_moving``). With ``--fit-mask
lung_mask|fov_mask`` the session limits its similarity to that mask of the case (the step again); with
``--min-gain F``, ``--min-motion-left F`` or ``--min-unfitted-gain F`` the step runs with that guard setting
(what a step the rule declined would have done).

    python scripts/box_step_replay.py \
        --record bench/results-conebeam-11/arm_lung1-xvi-seed49-phase5_control0_rso_native.json \
        --out bench/results-conebeam-11/sliding-control-box.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_streak_study import pairs_of  # noqa: E402
from conebeam_study import case_inputs, iso_session  # noqa: E402
from streak_study import SETTINGS  # noqa: E402

from rso.core.boxes import box_from_ras  # noqa: E402
from rso.core.geometry import upsample_field  # noqa: E402
from rso.core.native import Refinement, build_problem, correction_tensor  # noqa: E402
from rso.core.pair import read_fit_mask  # noqa: E402
from rso.core.workflow import build_network  # noqa: E402
from rso.evaluation.bench.arms import write_json  # noqa: E402
from rso.evaluation.bench.cases import case_folder  # noqa: E402
from rso.settings import EngineSettings, RSOSettings  # noqa: E402


def truth_in_box(folder: Path, moving: int, box) -> dict:
    """Mean true displacement (LPS mm) in the box's lung voxels and in its other voxels, on the case grid."""
    truth = sitk.ReadImage(str(folder / f"truth_0_{moving}.nii.gz"))
    lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lung_mask.nii.gz"))) > 0.5
    low = truth.TransformPhysicalPointToIndex(box.lps_min)
    high = truth.TransformPhysicalPointToIndex(box.lps_max)
    inside = tuple(slice(min(a, b), max(a, b) + 1) for a, b in zip(low[::-1], high[::-1]))
    field, lung = sitk.GetArrayFromImage(truth)[inside], lungs[inside]
    return {
        "lung_share": round(float(lung.mean()), 3),
        "truth_lung_mm": np.round(field[lung].mean(axis=0), 2).tolist(),
        "truth_other_mm": np.round(field[~lung].mean(axis=0), 2).tolist() if (~lung).any() else None,
    }


def window_problem(session, pair, box, state):
    """Native RSO's problem for ``box`` on ``pair`` from session ``state`` (its window, its current field)."""
    current = (session.grid.voxels_to_mm(state.field), state.patches)
    margin = RSOSettings().blend_margin_mm
    return build_problem(pair, box, margin, session.grid, current, torch.device("cpu"))


def step_on_window(session, pair, box, before, after) -> np.ndarray:
    """The correction a step made, from state ``before`` to ``after``, on the box's window (Z, Y, X, 3) mm."""
    return (
        window_problem(session, pair, box, after).current_mm
        - window_problem(session, pair, box, before).current_mm
    )


def gains(session, state, box, step_mm: np.ndarray, pairs: dict) -> dict:
    """Per image pair: the similarity's gain of ``step_mm`` and of the true correction, from ``state``."""
    result = {}
    for name, pair in pairs.items():
        problem = window_problem(session, pair, box, state)
        truth = upsample_field(session.truth, problem.window.reference_image())
        to_truth = sitk.GetArrayFromImage(truth).astype(np.float32) - problem.current_mm
        refinement = Refinement(problem, SETTINGS)
        with torch.no_grad():
            corrections = (0 * step_mm, step_mm, to_truth)
            cost = [float(refinement.similarity(correction_tensor(c))) for c in corrections]
        result[name] = {"step": round(1 - cost[1] / cost[0], 3), "truth": round(1 - cost[2] / cost[0], 3)}
    return result


def half_matched(given, matched) -> dict:
    """Each phase as given against the other through its geometry: the pair then shares one geometry's
    streaks (made from each phase's own anatomy) and not the other's, unlike the matched pair."""
    return {"half_fixed": (given[0], matched[1]), "half_moving": (matched[0], given[1])}


def replay(record_path: Path, fit_mask: str | None, settings: RSOSettings) -> dict:
    record = json.loads(record_path.read_text())
    case = record["case"]
    moving = case["moving_phase"]
    # the record's own folder (a --case-dir run's is not the plan's)
    folder = Path(case["folder"]) if case.get("folder") else None
    folder = folder or case_folder(case["anatomy"], case["seed"], case["preset"], moving)
    inputs = case_inputs(folder, moving)
    if fit_mask:
        inputs["fit_mask"] = read_fit_mask(str(folder / f"{fit_mask}.nii.gz"))
    engine = EngineSettings(device="cpu", precision="fp32")
    session, _ = iso_session(engine, inputs, build_network(engine), 100)
    box = box_from_ras(session.grid, record["box"]["ras"])
    before_state, before_field = session.state, session.field_mm.copy()
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    step = session.rso(box, settings)
    correction = (session.field_mm - before_field)[box.voxels.slices].reshape(-1, 3)
    result = {
        "record": str(record_path),
        "fit_mask": fit_mask,
        "box_tre_before_mm": round(before, 2),
        "box_tre_after_mm": round(step.metrics["tre_mm_box"]["mean"], 2) if step.accepted else None,
        "declined": step.declined,
        "guard": step.guard,
        "correction_mean_mm": np.round(correction.mean(axis=0), 2).tolist(),
        **truth_in_box(folder, moving, box),
    }
    if step.accepted:
        pairs = pairs_of(session, folder, moving)
        pairs = {name: pairs[name] for name in ("ct", "cbct", "matched", "ideal", "ideal_one_geometry")}
        pairs |= half_matched(pairs["cbct"], pairs["matched"])
        step_mm = step_on_window(session, pairs["ct"], box, before_state, session.state)
        result["gain"] = gains(session, before_state, box, step_mm, pairs)
    return result


def add_guard_options(parser: argparse.ArgumentParser) -> None:
    """``--min-gain F``, ``--min-motion-left F`` and ``--min-unfitted-gain F``: guard settings for the
    replayed steps."""
    parser.add_argument("--min-gain", type=float, help="the gain a step needs (default: the default)")
    parser.add_argument(
        "--min-motion-left", type=float, help="the guard's motion left (0: off; default: the default)"
    )
    parser.add_argument(
        "--min-unfitted-gain",
        type=float,
        help="the gain a matched step needs on the images as given (default: the default)",
    )


def step_settings(args: argparse.Namespace) -> RSOSettings:
    """The default RSO settings, with the guard options that were given."""
    given = {
        "min_gain": args.min_gain,
        "min_motion_left": args.min_motion_left,
        "min_unfitted_gain": args.min_unfitted_gain,
    }
    return RSOSettings(**{name: value for name, value in given.items() if value is not None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, required=True, help="a benchmark arm record of a native step")
    parser.add_argument("--fit-mask", choices=("lung_mask", "fov_mask"), help="limit the similarity to it")
    add_guard_options(parser)
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = replay(args.record, args.fit_mask, step_settings(args))
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
