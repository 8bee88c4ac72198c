"""Where the scanner saw nothing: the misaligned boxes and ISO against the scan's field of view (#20).

A simulated cone-beam phase covers the whole working grid, but the scanner's panel covers only part of the
body along its rotation axis (the TrueBeam-like half fan's about 20 cm), and FDK leaves a dark, streaked
image beyond it. Two looks, neither choosing a setting:

* ``--run DIR`` (benchmark outputs, as ``conebeam_runs_table.py``): each misaligned box of the default
  path, wholly inside the field of view or partly outside it, by preset: how many, how many below ISO-500,
  the median reduction. The field of view is the simulator's (``scanned_field_of_view``) on the anatomy's
  working grid, which every seed of that anatomy and preset shares (not the ``-vendor`` cases since run 22,
  cut to the slices the scan reaches).
* ``--case CASE_DIR:K``: ISO-100 on the matched pair as the default runs it, and again with the field of
  view (the case's ``fov_mask.nii.gz``) as the fit mask; whether ISO's guard kept ISO, the whole-lung TRE
  and, with ``--run``, the run's box TREs; one JSON line each. ``--simulate ANATOMY:PRESET:K:SEEDS`` makes
  training cases in the case cache and runs the same.

    python scripts/field_of_view_study.py --run bench/results-conebeam-5 ... --run bench/results-conebeam-18
    python scripts/field_of_view_study.py --run bench/results-conebeam-18 \\
        --case ~/.cache/rso-registration/cases/bench-cxr-truebeam-4min-seed63-phase5:5
    python scripts/field_of_view_study.py --simulate cxr:truebeam-4min:5:117-118
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "RSORegistration"))
from conebeam_runs_table import DEFAULT_ARM, box_tre, of_kind, read_run  # noqa: E402
from end_rule_replay import working_grid  # noqa: E402

from rso.core.geometry import ras_to_lps  # noqa: E402
from rso.core.projection import FOV_MASK  # noqa: E402
from rso.evaluation.bench.summary import paired  # noqa: E402
from rso.simulation.clinical import scanner_preset  # noqa: E402
from rso.simulation.field_of_view import scanned_field_of_view  # noqa: E402
from rso.simulation.simulate import SimulationParams  # noqa: E402

BOX_KINDS = ("misaligned0", "misaligned1", "residual0", "control0", "control1")


@cache
def field_of_view(anatomy: str, preset: str) -> sitk.Image:
    """The scan's field of view (uint8) on the anatomy's working grid."""
    scanner = SimulationParams.preset(preset).scanner
    return scanned_field_of_view(working_grid(anatomy), scanner_preset(scanner))


def inside_share(ras: list[float], anatomy: str, preset: str) -> float:
    """The share of a box's voxels ([R1, A1, S1, R2, A2, S2]) inside the scan's field of view."""
    mask = field_of_view(anatomy, preset)
    corners = np.array(
        [mask.TransformPhysicalPointToContinuousIndex(ras_to_lps(c)) for c in (ras[:3], ras[3:])]
    )
    low = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(corners.max(axis=0)).astype(int), np.array(mask.GetSize()) - 1)
    inside = sitk.GetArrayViewFromImage(mask)[
        low[2] : high[2] + 1, low[1] : high[1] + 1, low[0] : high[0] + 1
    ]
    return float(inside.mean()) if inside.size else 0.0


def box_table(records: list[dict]) -> dict:
    """Per preset and place: the default path's misaligned boxes against ISO-500."""
    table = {}
    for after, before in paired(of_kind(records, ("misaligned",)), DEFAULT_ARM, "iso_long"):
        case = after["case"]
        share = inside_share(after["box"]["ras"], case["anatomy"], case["preset"])
        place = "inside" if share > 0.999 else "partly outside"
        table.setdefault(case["preset"], {}).setdefault(place, []).append((box_tre(after), box_tre(before)))
    return {
        preset: {place: _score(pairs) for place, pairs in places.items()} for preset, places in table.items()
    }


def _score(pairs: list[tuple[float, float]]) -> dict:
    rso, iso_500 = np.array(pairs).T
    return {
        "boxes": len(pairs),
        "below_iso_500": int(np.sum(rso < iso_500)),
        "median_reduction": round(float(np.median((iso_500 - rso) / iso_500)), 3),
    }


def iso_rows(folder: Path, moving: int, run: Path | None) -> list[dict]:
    """ISO-100 on the matched pair without and with the field of view as the fit mask."""
    import torch
    from conebeam_study import case_inputs, iso_session

    from rso.core.pair import read_fit_mask
    from rso.core.workflow import build_network
    from rso.settings import EngineSettings

    torch.set_num_threads(2)
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    fov = read_fit_mask(str(folder / FOV_MASK))
    rows = []
    for masked in (False, True):
        inputs = case_inputs(folder, moving)
        if masked:
            inputs["fit_mask"] = fov
        session, seconds = iso_session(engine, inputs, network, 100)
        name = folder.name.removeprefix("bench-")
        row = {"case": name, "fov_fit_mask": masked, "iso_seconds": seconds} | iso_guard(session)
        row |= lung_tre(session)
        if run is not None:
            row |= box_tres(session, run, name)
        rows.append(row)
    return rows


def iso_guard(session) -> dict:
    """ISO's guard on the last step: its gain on the images as given and whether ISO's field was kept."""
    params = session.history[-1].params
    return {"given_gain": params.get("given_gain"), "iso_kept": params.get("kept") != "start"}


def lung_tre(session) -> dict:
    return {"lung_tre_mm": round(session.metrics()["tre_mm"]["mean"], 2)}


def box_tres(session, run: Path, name: str) -> dict:
    from rso.core.boxes import box_from_ras

    tres = {}
    for kind in BOX_KINDS:
        record = json.loads((run / f"arm_{name}_{kind}_iso_short.json").read_text())
        box = box_from_ras(session.grid, record["box"]["ras"])
        tres[kind] = round(session.metrics(box=box)["tre_mm_box"]["mean"], 2)
    return tres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", default=[], help="a bench output folder")
    parser.add_argument("--case", action="append", default=[], metavar="CASE_DIR:K", help="ISO on this case")
    parser.add_argument("--simulate", action="append", default=[], metavar="ANATOMY:PRESET:K:SEEDS")
    args = parser.parse_args()
    if args.case or args.simulate:
        from fold_rule_study import cases_of

        for folder, moving in cases_of(args):
            for row in iso_rows(folder, moving, args.run[0] if args.run else None):
                print(json.dumps(row), flush=True)
        return
    if not args.run:
        parser.error("give --run, or --case or --simulate")
    records = [r for folder in args.run for r in read_run(folder)]
    print(json.dumps(box_table(records), indent=1))


if __name__ == "__main__":
    main()
