"""Native RSO on a 1 mm image: its window sampled at 1 mm (the old rule) against 2 mm (the frozen one).

The case: two CBCT phases, their truth and RTK geometries, resampled to 1 mm (``bench --scale`` makes
such a folder under its output: ``scale_cache/1.0mm``). General model, ISO-100, then the three most
misaligned 40 mm boxes, each refined with the frozen defaults at both window spacings (undone between
runs); one JSON row per (spacing, box) with its seconds, whether the guard declined it and the box TRE.

    python scripts/window_study.py CASE_FOLDER --out bench/sweep/window/rows.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import rso.core.native.problem as problem
from rso.core.inputs import read_inputs
from rso.core.workflow import start_session
from rso.evaluation.box_kinds import pick_boxes
from rso.settings import EngineSettings, ISOSettings, PairInputs, RSOSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "case", type=Path, help="cbct_phase0/5.nii.gz, truth_0_5.nii.gz, lung_mask.nii.gz, geometries"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    case = args.case
    inputs = PairInputs(
        fixed=str(case / "cbct_phase0.nii.gz"),
        moving=str(case / "cbct_phase5.nii.gz"),
        truth=str(case / "truth_0_5.nii.gz"),
        metrics_mask=str(case / "lung_mask.nii.gz"),
        fixed_geometry=str(case / "cbct_phase0_geometry.xml"),
        moving_geometry=str(case / "cbct_phase5_geometry.xml"),
    )
    session = start_session(EngineSettings(device="cpu", precision="fp32"), read_inputs(inputs))
    session.general()
    session.iso(ISOSettings(iterations=100))
    boxes = pick_boxes(session, "misaligned", 3, 40.0)
    rows = []
    for spacing in (2.0, 1.0):
        problem.WINDOW_SPACING_MM = spacing  # what build_problem reads
        for index, box in enumerate(boxes):
            start = time.perf_counter()
            record = session.rso(box, RSOSettings())
            rows.append(
                {
                    "window_mm": spacing,
                    "box": index,
                    "tre_box_before": session.metrics(box=box)["tre_mm_box"]["mean"]
                    if record.declined
                    else None,
                    "tre_box_after": record.metrics["tre_mm_box"]["mean"],
                    "declined": record.declined is not None,
                    "seconds": round(time.perf_counter() - start, 1),
                    "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                }
            )
            if record.accepted:
                session.undo()
            print(json.dumps(rows[-1]), flush=True)
    for index, box in enumerate(boxes):
        print(
            json.dumps({"box": index, "tre_box_after_iso100": session.metrics(box=box)["tre_mm_box"]["mean"]})
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
