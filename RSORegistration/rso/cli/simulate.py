"""``simulate``: a 4D CT/CBCT case with ground-truth fields from one chest CT (docs/simulator.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rso.simulation.simulate import SimulationParams


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `simulate --ct PATH --out DIR [--phases 10] [--seed S] [--spacing MM] [--overwrite] [--figure PNG]`."""
    parser = subparsers.add_parser(
        "simulate", help="make a 4D CT/CBCT case with ground-truth fields from one chest CT",
        description="Breathing motion, CT phases, phase-binned sparse-view CBCT phases and the ground-truth "
                    "fields phase 0 -> K, written to one case folder (see docs/simulator.md).")
    parser.add_argument("--ct", required=True, type=Path,
                        help="source chest CT in HU (NIfTI, NRRD, MHA or a DICOM folder)")
    parser.add_argument("--out", required=True, type=Path, help="case folder to write")
    parser.add_argument("--phases", type=int, default=10, help="breathing phases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the motion amplitudes, perturbations and noise")
    parser.add_argument("--spacing", type=float, default=SimulationParams.spacing_mm, metavar="MM",
                        help=f"working grid spacing in mm (default {SimulationParams.spacing_mm}; "
                             "0 keeps the source's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing case folder")
    parser.add_argument("--figure", type=Path, metavar="PNG", help="also write a figure of the case")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from rso.simulation.simulate import plot_case, simulate_case

    params = SimulationParams(spacing_mm=args.spacing or None)
    case = simulate_case(args.ct, args.out, args.phases, args.seed, params, overwrite=args.overwrite,
                         progress=not getattr(args, "quiet", False))
    if args.figure:
        plot_case(case, args.figure)
    print(case)
    return 0
