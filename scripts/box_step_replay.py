"""Replay one benchmark box step and say what the box holds: the correction, and how the truth moves its
lung and its other voxels (#20).

From a benchmark arm record (``--record bench/results-.../arm_<case>_<kind><i>_rso_native.json``), the case
is opened as the benchmark opens it (with both geometry files for an FDK case), general model -> ISO-100
-> native RSO with the default settings on the recorded box. Printed and written as JSON (``--out``): the
box TRE before and after, the guard's record, the correction's mean in the box (LPS mm), the true
displacement's mean along each axis in the box's lung voxels and in its other voxels (a box on a sliding
boundary shows two motions), and the lung share of the box.

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
from conebeam_study import case_inputs, iso_session  # noqa: E402

from rso.core.boxes import box_from_ras  # noqa: E402
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


def replay(record_path: Path) -> dict:
    record = json.loads(record_path.read_text())
    case = record["case"]
    moving = case["moving_phase"]
    folder = case_folder(case["anatomy"], case["seed"], case["preset"], moving)
    engine = EngineSettings(device="cpu", precision="fp32")
    session, _ = iso_session(engine, case_inputs(folder, moving), build_network(engine), 100)
    box = box_from_ras(session.grid, record["box"]["ras"])
    before_field = session.field_mm.copy()
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    step = session.rso(box, RSOSettings())
    correction = (session.field_mm - before_field)[box.voxels.slices].reshape(-1, 3)
    return {
        "record": str(record_path),
        "box_tre_before_mm": round(before, 2),
        "box_tre_after_mm": round(step.metrics["tre_mm_box"]["mean"], 2) if step.accepted else None,
        "declined": step.declined,
        "guard": step.guard,
        "correction_mean_mm": np.round(correction.mean(axis=0), 2).tolist(),
        **truth_in_box(folder, moving, box),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, required=True, help="a benchmark arm record of a native step")
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = replay(args.record)
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
