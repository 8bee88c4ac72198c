"""ISO-long without geometry on a benchmark run's cases: the like-for-like comparator of the no-geometry path.

A benchmark (``rso-registration bench``) compares native RSO without geometry against ISO-long *with*
geometry (artefact-matched), the only ISO-long it runs. Where matching does not help (phases already free
of streaks, e.g. the TV reconstruction), that comparator is weak. This script runs ISO-long on the same
cases without geometry, scores it in the run's own boxes (read from its arm records), and sets it beside
ISO-short and native RSO without geometry, box by box.

    python scripts/iso_long_no_geometry.py --results bench/results-conebeam-tv --moving-phase 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from rso.core.boxes import VoxelBox, box_from_lps
from rso.evaluation.bench.arms import Model
from rso.evaluation.bench.cases import resolve_cases
from rso.evaluation.bench.plan import BenchPlan

COMPARED = ("iso_short_no_geometry", "rso_native_no_geometry")


def run_boxes(results: Path) -> dict[str, list[dict]]:
    """{case folder: [arm records of the compared arms]} from the run's arm_*.json files."""
    boxes = defaultdict(list)
    for path in sorted(results.glob("arm_*.json")):
        record = json.loads(path.read_text())
        if record["arm"] in COMPARED:
            boxes[record["case"]["folder"]].append(record)
    return boxes


def score_case(model: Model, case, records: list[dict], iso_long: int) -> list[dict]:
    inputs = {**case.inputs(), "fixed_geometry": None, "moving_geometry": None}
    session = model.session(inputs)
    session.general()
    started = time.perf_counter()
    session.iso(iso_long)
    seconds = time.perf_counter() - started
    rows = []
    for record in (r for r in records if r["arm"] == COMPARED[0]):
        box_record = record["box"]
        r1, a1, s1, r2, a2, s2 = box_record["ras"]
        box = box_from_lps(session.grid, (-r1, -a1, s1), (-r2, -a2, s2))
        assert box.voxels == VoxelBox.from_dict(box_record["voxels"]), "the run's box moved"
        same_box = [r for r in records if r["box"] == box_record]
        row = {"case": case.name, "kind": box_record["kind"], "index": box_record["index"]}
        # mean TRE in the box (mm), the benchmark's box_tre_mean_mm
        row |= {r["arm"]: r["metrics"]["tre_mm_box"]["mean"] for r in same_box}
        row["iso_long_no_geometry"] = session.metrics(session.field_voxels, box)["tre_mm_box"]["mean"]
        rows.append(row)
    print(f"{case.name}: ISO-{iso_long} without geometry in {seconds:.0f} s", flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for kind in sorted({row["kind"] for row in rows}):
        kept = [row for row in rows if row["kind"] == kind]
        rso = np.array([row["rso_native_no_geometry"] for row in kept])
        long = np.array([row["iso_long_no_geometry"] for row in kept])
        short = np.array([row["iso_short_no_geometry"] for row in kept])
        summary[kind] = {
            "boxes": len(kept),
            "median_box_tre_mm": {
                "iso_short_no_geometry": float(np.median(short)),
                "iso_long_no_geometry": float(np.median(long)),
                "rso_native_no_geometry": float(np.median(rso)),
            },
            "rso_beats_iso_long": float(np.mean(rso < long)),
            "median_reduction_vs_iso_long": float(np.median(1.0 - rso / long)),
            "worst_change_from_iso_short_mm": float(np.max(rso - short)),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a benchmark run's output folder")
    parser.add_argument("--moving-phase", type=int, required=True)
    parser.add_argument("--iso-long", type=int, default=BenchPlan.iso_long)
    parser.add_argument("--out", type=Path, help="default: RESULTS/iso_long_no_geometry.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    boxes = run_boxes(args.results)
    plan = BenchPlan(case_dirs=tuple(boxes), moving_phase=args.moving_phase)
    model = Model(None, None, plan)
    rows = []
    for case in resolve_cases(plan):
        rows += score_case(model, case, boxes[str(case.folder)], args.iso_long)
    report = {"iso_long": args.iso_long, "rows": rows, "summary": summarise(rows)}
    out = args.out or args.results / "iso_long_no_geometry.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
