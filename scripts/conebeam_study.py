"""Cone-beam study: what artefact matching in the scanner's geometry does on clinical-like 4D CBCT.

For each case (a folder made by ``rso-registration simulate --preset xvi|truebeam``), from the same
general model: ISO-100 with and without the projection geometry (matched / raw), ISO-500 matched, and
native RSO (the defaults) on misaligned and control boxes picked on the matched ISO-100 field, in each
chain. With ``--wrong``, the matched chain again with a slightly wrong geometry: every angle off by
0.5 degrees, the distances off by 1 %, or one cluster of views missing. Prints a table per case and
writes one JSON record per case into ``--out`` (training anatomies only: settings are chosen there).

    python scripts/conebeam_study.py --case DIR [--case DIR ...] --out bench/sweep/conebeam [--wrong]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from rso.core.inputs import read_inputs
from rso.core.projection.geometry import phase_reconstruction
from rso.core.workflow import build_network, start_session
from rso.evaluation.bench.cases import _geometries
from rso.evaluation.box_kinds import pick_boxes
from rso.evaluation.wrong_geometry import wrong_geometries
from rso.settings import EngineSettings, PairInputs, RSOSettings

log = logging.getLogger("conebeam_study")


def case_spec(spec: str) -> tuple[Path, int]:
    """``DIR[:K]`` -> (the case folder, the moving phase: K, or the last phase the case made)."""
    folder, _, moving = spec.partition(":")
    folder = Path(folder)
    made = json.loads((folder / "case.json").read_text())["phases_made"]
    return folder, int(moving) if moving else made[-1]


def case_inputs(folder: Path, moving: int, tv_files: bool = False) -> dict:
    """The pair as the studies register it: with geometry for FDK phases, without for TV ones unless
    ``tv_files`` (the studies before TV phases' geometry files were accepted: a user without the files)."""
    fixed_geometry, moving_geometry = _geometries(folder, (0, moving))
    if fixed_geometry and not tv_files and phase_reconstruction(fixed_geometry) != "fdk":
        fixed_geometry = moving_geometry = None
    return read_inputs(
        PairInputs(
            fixed=str(folder / "cbct_phase0.nii.gz"),
            moving=str(folder / f"cbct_phase{moving}.nii.gz"),
            reference=str(folder / "ct_phase0.nii.gz"),
            truth=str(folder / f"truth_0_{moving}.nii.gz"),
            metrics_mask=str(folder / "lung_mask.nii.gz"),
            fixed_geometry=str(fixed_geometry) if fixed_geometry else None,
            moving_geometry=str(moving_geometry) if moving_geometry else None,
        )
    )


def iso_session(engine, inputs, network, iso: int):
    """general -> ISO-``iso``: the session and ISO's seconds."""
    session = start_session(engine, inputs, network=network)
    session.general()
    started = time.perf_counter()
    session.iso(iso)
    return session, round(time.perf_counter() - started, 1)


def chain(session, iso_seconds: float, boxes, rso: RSOSettings) -> dict:
    """Native RSO on each box from the session's ISO state (undone after each): TRE in mm."""
    result = {"iso_seconds": iso_seconds, "boxes": []}
    result["lung_tre_mm"] = session.metrics()["tre_mm"]["mean"]
    result["matching"] = session.pair.matching_status(True)
    result["matching_seconds"] = session.pair.matching_seconds
    for kind, box in boxes:
        before = session.metrics(box=box)["tre_mm_box"]["mean"]
        record = session.rso(box, rso)
        after = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
        returned = (record.guard or {}).get("returned_to")
        row = {"kind": kind, "ras": box.ras_corners, "iso_box_tre_mm": before, "rso_box_tre_mm": after}
        row |= {"declined": record.declined, "returned_to": returned, "seconds": record.seconds}
        result["boxes"].append(row)
        if record.accepted:
            session.undo()
    return result


def study_case(folder: Path, moving: int, args, engine, network) -> dict:
    inputs = case_inputs(folder, moving)
    rso = RSOSettings(**dict(args.rso))
    record = {"case": folder.name, "moving_phase": moving, "settings": {"rso": rso.__dict__, "iso": args.iso}}
    matched, seconds = iso_session(engine, inputs, network, args.iso)
    picked = [(k, b) for k, n in (("misaligned", 2), ("control", 2)) for b in pick_boxes(matched, k, n, 40.0)]
    record["general_lung_tre_mm"] = matched.metrics(matched.state_field(1))["tre_mm"]["mean"]
    record["matched"] = chain(matched, seconds, picked, rso)
    raw = {**inputs, "fixed_geometry": None, "moving_geometry": None}
    record["raw"] = chain(*iso_session(engine, raw, network, args.iso), picked, rso)
    if args.iso_long:
        long_arm, _ = iso_session(engine, inputs, network, args.iso_long)
        record["iso_long"] = {
            "lung_tre_mm": long_arm.metrics()["tre_mm"]["mean"],
            "box_tre_mm": [long_arm.metrics(box=b)["tre_mm_box"]["mean"] for _, b in picked],
        }
    if args.wrong:
        record["wrong"] = {}
        moving = inputs["moving_geometry"]  # a PhaseScan
        for name, geometry in wrong_geometries(moving.geometry).items():
            wrong = {**inputs, "moving_geometry": replace(moving, geometry=geometry)}
            record["wrong"][name] = chain(*iso_session(engine, wrong, network, args.iso), picked, rso)
    return record


def print_record(record: dict) -> None:
    general = record["general_lung_tre_mm"]
    print(f"\n{record['case']} (phase 0 <- {record['moving_phase']}): general, lung TRE {general:.2f} mm")
    chains = {"matched": record["matched"], "raw (no geometry)": record["raw"], **record.get("wrong", {})}
    for name, result in chains.items():
        boxes = ", ".join(
            f"{b['kind'][:3]} {b['iso_box_tre_mm']:.2f}->{b['rso_box_tre_mm']:.2f}"
            + ("R" if b["returned_to"] is not None else "")
            + ("d" if b["declined"] else "")
            for b in result["boxes"]
        )
        print(f"  {name:22s} lung {result['lung_tre_mm']:.2f} mm | {boxes}")
    if "iso_long" in record:
        long_arm = record["iso_long"]
        boxes = ", ".join(f"{t:.2f}" for t in long_arm["box_tre_mm"])
        print(f"  {'ISO-long':22s} lung {long_arm['lung_tre_mm']:.2f} mm | {boxes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, metavar="DIR[:K]")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iso", type=int, default=100)
    parser.add_argument("--iso-long", type=int, default=0, metavar="N", help="also ISO-N matched (0: not)")
    parser.add_argument("--wrong", action="store_true", help="also the slightly wrong geometries")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--rso",
        action="append",
        default=[],
        type=lambda text: (text.split("=")[0], float(text.split("=")[1])),
        metavar="NAME=VALUE",
        help="a native RSO setting other than the default (e.g. presmooth_mm=4), repeatable",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    engine = EngineSettings(precision=args.precision, device="cpu")
    network = build_network(engine)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.case:
        folder, phase = case_spec(spec)
        record = study_case(folder, phase, args, engine, network)
        (args.out / f"{folder.name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        print_record(record)


if __name__ == "__main__":
    main()
