"""``demo``: the paper's ISO vs ISO + RSO comparison on the held-out simulated patient, with truth, as
scanned by each scanner preset (XVI-like and TrueBeam-like; ``--scanner`` picks one)."""

from __future__ import annotations

from pathlib import Path

from rso.cli.common import add_engine_arguments, engine_from_args, number_list
from rso.cli.register import add_rso_arguments, rso_settings_from_args
from rso.options import DEMO_SCANNERS


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the paper's ISO vs ISO+RSO comparison on a simulated real-patient CBCT case"
    )
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument(
        "--quick", action="store_true", help="fewer network iterations (ISO-50 against ISO-10 + RSO)"
    )
    parser.add_argument(
        "--scanner",
        action="append",
        choices=DEMO_SCANNERS,
        help=f"run this scanner's case only (repeatable; default: {' and '.join(DEMO_SCANNERS)})",
    )
    parser.add_argument(
        "--roi",
        type=number_list(6),
        metavar="R1,A1,S1,R2,A2,S2",
        help="the RSO box in RAS mm (default: where the residual is worst after ISO)",
    )
    add_rso_arguments(parser)
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from rso.cli.progress import step_progress
    from rso.evaluation.demo import DemoPlan, run_demo

    plan = DemoPlan.quick() if args.quick else DemoPlan()
    with step_progress(not args.quiet) as progress:
        run_demo(
            plan,
            engine_from_args(args),
            rso_settings_from_args(args),
            Path(args.out),
            args.roi,
            progress,
            tuple(dict.fromkeys(args.scanner or DEMO_SCANNERS)),  # each once, in the order given
        )
    return 0
