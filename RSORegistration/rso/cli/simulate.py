"""``simulate``: a 4D CT/CBCT case with ground-truth fields from one chest CT (docs/simulator.md)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rso.cli.common import whole_numbers
from rso.simulation.simulate import SIMULATION_PRESETS, SimulationParams


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `simulate --ct PATH --out DIR [--phases 10] [--seed S] [--spacing MM] [--overwrite]
    [--figure PNG]`."""
    parser = subparsers.add_parser(
        "simulate",
        help="make a 4D CT/CBCT case with ground-truth fields from one chest CT",
        description="Breathing motion, CT phases, phase-binned sparse-view CBCT phases and the ground-truth "
        "fields phase 0 -> K, written to one case folder (see docs/simulator.md).",
    )
    parser.add_argument(
        "--ct", required=True, type=Path, help="source chest CT in HU (NIfTI, NRRD, MHA or a DICOM folder)"
    )
    parser.add_argument("--out", required=True, type=Path, help="case folder to write")
    parser.add_argument("--phases", type=int, default=10, help="breathing phases (default 10)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the motion amplitudes, perturbations and noise"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=SimulationParams.spacing_mm,
        metavar="MM",
        help=f"working grid spacing in mm (default {SimulationParams.spacing_mm}; 0 keeps the source's)",
    )
    parser.add_argument(
        "--preset",
        choices=SIMULATION_PRESETS,
        default="standard",
        help="standard: the breathing model; local: 20-25 mm breathing, lagging lower lobes and an "
        "inserted lesion with its own trajectory; clinical: local with the parallel projector's clinical "
        "preset; xvi, truebeam: local as clinical cone-beam 4D CBCT (RTK) like Elekta XVI or Varian "
        "TrueBeam, each phase by FDK with its RTK geometry file; truebeam-4min: the half fan turning in "
        "4 min; xvi-tv, truebeam-tv: the same, each phase by the TV reconstruction of `phases "
        "--reconstruction tv` (~20 times slower); xvi-vendor, truebeam-vendor: each FDK phase written as "
        "a console writes it, air outside the scan's field of view (docs/simulator.md)",
    )
    parser.add_argument(
        "--only",
        type=whole_numbers,
        metavar="K,...",
        help="make only phase 0 and these phases (faster; e.g. 5 for one pair)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing case folder")
    parser.add_argument("--figure", type=Path, metavar="PNG", help="also write a figure of the case")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from rso.simulation.simulate import plot_case, simulate_case

    params = replace(SimulationParams.preset(args.preset), spacing_mm=args.spacing or None)
    case = simulate_case(
        args.ct,
        args.out,
        args.phases,
        args.seed,
        params,
        overwrite=args.overwrite,
        progress=not getattr(args, "quiet", False),
        only=list(args.only) if args.only else None,
    )
    if args.figure:
        plot_case(case, args.figure)
    print(case)
    return 0
