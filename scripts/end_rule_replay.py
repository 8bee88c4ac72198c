"""The runs table again as if box steps near the image's superior or inferior end had been declined (#20).

``--min-end-distance MM`` (``RSOSettings.min_end_distance_mm``) declines a native box step before any
optimisation where the projection geometry is known and the box comes closer than MM to the fixed image's
first or last slice along the scanner's rotation axis (the superior-inferior axis with the default
placement), so its outcome is known without running it: the box keeps its ISO-100 field. This script takes
the per-arm records of benchmark runs (``--run DIR``, as ``conebeam_runs_table.py``), gives the RSO arm of
each path with geometry (default, wrong geometry) whose box lies that close the metrics of the ISO-100 arm
it started from, and prints the table and the pooled numbers. The case's image extent comes from its
anatomy's working grid (the simulator's, rebuilt from the fetched CT), which every preset and seed of that
anatomy shares, except the ``-vendor`` cases made since run 22 (seeds 69 on), which are cut to the slices the
scan reaches: not for those.

    python scripts/end_rule_replay.py --min-end-distance 20 --run bench/results-conebeam-5 ... \\
        --out bench/sweep/edge/heldout-replay.json
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "RSORegistration"))
from conebeam_runs_table import PATHS, misaligned, presets, print_table, read_run, run_row  # noqa: E402

from rso.core.boxes import Box, VoxelBox, axial_end_distance_mm  # noqa: E402
from rso.core.geometry import ras_to_lps  # noqa: E402
from rso.core.imageio import read_image  # noqa: E402
from rso.simulation.fetch import fetch_data  # noqa: E402
from rso.simulation.grid import working_ct  # noqa: E402
from rso.simulation.simulate import SimulationParams  # noqa: E402


@cache
def working_grid(anatomy: str):
    """The simulator's working CT of an anatomy (every cone-beam case of it shares this grid)."""
    params = SimulationParams()
    return working_ct(read_image(str(fetch_data()[anatomy]), "CT"), params.spacing_mm, params.crop_margin_mm)


def end_distance(ras: list[float], anatomy: str) -> float:
    """mm from a box ([R1, A1, S1, R2, A2, S2]) to its anatomy's image's nearer superior or inferior end."""
    a, b = ras_to_lps(ras[:3]), ras_to_lps(ras[3:])
    box = Box(tuple(np.minimum(a, b)), tuple(np.maximum(a, b)), VoxelBox((0, 0, 0), (1, 1, 1)))
    return axial_end_distance_mm(working_grid(anatomy), box)


def with_rule(records: list[dict], limit_mm: float) -> tuple[list[dict], list[dict]]:
    """The records with each path's RSO step declined where its box lies within ``limit_mm`` of an end (its
    metrics those of the ISO-100 arm it started from), and the declined steps' records as they ran."""
    # The rule needs the projection geometry (the scanner's rotation axis): not the no-geometry path.
    starts = {arm: start for path, (arm, start) in PATHS.items() if path != "no geometry"}
    by_key = {(r["case"]["name"], r["box"]["kind"], r["box"]["index"], r["arm"]): r for r in records}
    result, declined = [], []
    for record in records:
        start = starts.get(record["arm"])
        if start is None or end_distance(record["box"]["ras"], record["case"]["anatomy"]) >= limit_mm:
            result.append(record)
            continue
        before = by_key[(record["case"]["name"], record["box"]["kind"], record["box"]["index"], start)]
        result.append({**record, "metrics": before["metrics"], "declined": "near the image's end"})
        declined.append(record)
    return result, declined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a bench output folder")
    parser.add_argument("--min-end-distance", type=float, required=True, metavar="MM")
    parser.add_argument("--out", type=Path, help="write the rows, the pooled numbers and the declined steps")
    args = parser.parse_args()
    runs, declined = [], []
    for folder in args.run:
        records, gone = with_rule(read_run(folder), args.min_end_distance)
        runs.append((folder, records))
        declined += [_step(r, records) for r in gone]
    rows = [run_row(folder, records) for folder, records in runs]
    everything = [r for _, records in runs for r in records]
    pooled = {p: misaligned(everything, p) for p in presets(everything)}
    print_table(rows, pooled)
    print(f"\n{len(declined)} steps declined by the rule (box TRE mm: ISO-100 start -> as they ran):")
    for step in declined:
        print(f"  {step['case']} {step['kind']} {step['arm']}: {step['start_mm']} -> {step['ran_mm']}")
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        result = {"min_end_distance_mm": args.min_end_distance, "runs": rows, "pooled_misaligned": pooled}
        tmp.write_text(json.dumps(result | {"declined": declined}, indent=1) + "\n")
        tmp.replace(args.out)


def _step(record: dict, replayed: list[dict]) -> dict:
    """A declined step: its case, box, arm, and box TRE at its start and as it ran."""
    mine = next(
        r
        for r in replayed
        if r["case"]["name"] == record["case"]["name"]
        and r["box"] == record["box"]
        and r["arm"] == record["arm"]
    )
    return {
        "case": record["case"]["name"],
        "kind": f"{record['box']['kind']}{record['box']['index']}",
        "arm": record["arm"],
        "start_mm": round(mine["metrics"]["tre_mm_box"]["mean"], 2),
        "ran_mm": round(record["metrics"]["tre_mm_box"]["mean"], 2),
    }


if __name__ == "__main__":
    main()
