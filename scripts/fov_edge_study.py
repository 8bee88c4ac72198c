"""Native RSO's box steps with the similarity limited to the scan's field of view (#20; a diagnosis).

A phase written as a console writes it (``-vendor`` presets) is air outside the scan's field of view, in
both phases at the same place: a correction that moves the moving phase's tissue there also moves that
still edge, which the similarity counts against it. For each benchmark record of a native step (``--run N``,
``--preset P`` picks that preset's cases) the case is opened as the benchmark opens it, general
model -> ISO-100, and the same box step runs with the session's fit mask (the similarity inside it only)
set, after ISO, to: none (the default), the case's ``fov_mask.nii.gz``, and that mask eroded by 6 and 12 mm.
One JSON line per box: ISO-100's box TRE, and per mask the TRE after the step, the gains on the pair
compared and on the images as given, and why a declined step was declined.

    python scripts/fov_edge_study.py --run 20 --run 21 --preset xvi-vendor \\
        --out bench/sweep/fov-edge/heldout-diagnosis.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "RSORegistration"))
from conebeam_runs_table import DEFAULT_ARM, read_run  # noqa: E402
from conebeam_study import case_inputs, iso_session  # noqa: E402

from rso.core.boxes import box_from_ras  # noqa: E402
from rso.core.workflow import build_network  # noqa: E402
from rso.settings import EngineSettings, RSOSettings  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "bench"
EROSIONS_MM = (None, 0, 6, 12)  # None: no fit mask (the default); 0: the field of view as it is


def records_by_case(runs: list[str], preset: str) -> dict[str, list[dict]]:
    """The default native steps' records of the runs' cases of ``preset``, by case folder."""
    by_case: dict[str, list[dict]] = {}
    for run in runs:
        for record in read_run(BENCH / f"results-conebeam-{run}"):
            if record["arm"] == DEFAULT_ARM and record["case"]["preset"] == preset:
                by_case.setdefault(record["case"]["folder"], []).append(record)
    return by_case


def fit_masks(folder: str) -> dict:
    """The fit masks tried, by erosion (mm): None, the field of view, and it eroded."""
    fov = sitk.ReadImage(f"{folder}/fov_mask.nii.gz") > 0
    inside = sitk.SignedMaurerDistanceMap(fov, insideIsPositive=True, useImageSpacing=True)
    masks = {None: None, 0: sitk.Cast(fov, sitk.sitkUInt8)}
    return masks | {mm: sitk.Cast(inside >= mm, sitk.sitkUInt8) for mm in EROSIONS_MM[2:]}


def step_row(session, box, before: float) -> dict:
    """The default step on ``box`` with the session's fit mask as set (undone if kept)."""
    step = session.rso(box, RSOSettings())
    guard = step.guard or {}
    row = {"tre": round(step.metrics["tre_mm_box"]["mean"] if step.accepted else before, 2)}
    row |= {"gain": round(guard.get("gain") or 0, 3), "given": round(guard.get("unfitted_gain") or 0, 3)}
    row["declined"] = (step.declined or "")[:60]
    if step.accepted:
        session.undo()
    return row


def study_case(folder: str, records: list[dict], engine, network, out) -> None:
    inputs = case_inputs(Path(folder), records[0]["case"]["moving_phase"])
    session, _ = iso_session(engine, inputs, network, 100)
    masks = fit_masks(folder)
    for record in records:
        box = box_from_ras(session.grid, record["box"]["ras"])
        before = session.metrics(box=box)["tre_mm_box"]["mean"]
        row = {"case": record["case"]["name"], "box": record["box"]["kind"] + str(record["box"]["index"])}
        row["iso100"] = round(before, 2)
        for erosion, mask in masks.items():
            session.pair.fit_mask = mask  # after ISO: only the box step is limited
            row[str(erosion)] = step_row(session, box, before)
        session.pair.fit_mask = None
        print(json.dumps(row), flush=True)
        out.write(json.dumps(row) + "\n")
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="a run number (results-conebeam-N)")
    parser.add_argument("--preset", required=True, help="the cases' preset, e.g. xvi-vendor")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args()
    torch.set_num_threads(2)
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    with args.out.open("a") as out:
        for folder, records in records_by_case(args.run, args.preset).items():
            study_case(folder, records, engine, network, out)


if __name__ == "__main__":
    main()
