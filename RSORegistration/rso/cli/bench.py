"""``bench``: the paper's experiment with ground truth, the classical peers, speed (bench/README.md)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rso.cli.common import add_engine_arguments, number_list
from rso.errors import InputError
from rso.evaluation.case_sets import CASE_SETS, describe
from rso.options import PRECISIONS


def box_plan(text: str) -> tuple[tuple[str, int], ...]:
    """'misaligned=2,control=1' -> (("misaligned", 2), ("control", 1))."""
    from rso.evaluation.box_kinds import BOX_KINDS

    try:
        plan = tuple(
            (kind.strip(), int(count)) for kind, count in (item.split("=") for item in text.split(","))
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KIND=N,... (e.g. misaligned=2,control=1)"
        ) from None
    unknown = [kind for kind, _ in plan if kind not in BOX_KINDS]
    if unknown or any(count < 0 for _, count in plan):
        raise argparse.ArgumentTypeError(
            f"box kinds are {', '.join(BOX_KINDS)} with counts >= 0; got {text!r}"
        )
    return plan


def plan_from_args(args):
    from rso.core.projection import FOV_MASK
    from rso.evaluation.bench.plan import BenchPlan

    plan = BenchPlan.quick() if args.quick else BenchPlan(cases=CASE_SETS[args.case_set])
    keys = ("boxes", "box_size_mm", "iso_long", "iso_short", "rso", "speed_iterations", "moving_phase")
    changes = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.case_dir:
        changes["case_dirs"] = tuple(str(Path(p)) for p in args.case_dir)
    if args.cases is not None:
        available = len(changes.get("case_dirs", plan.case_dirs) or plan.cases)
        if not 1 <= args.cases <= available:
            raise InputError(f"--cases must be 1..{available}")
        if changes.get("case_dirs", plan.case_dirs):
            changes["case_dirs"] = changes.get("case_dirs", plan.case_dirs)[: args.cases]
        changes["cases"] = plan.cases[: args.cases]
    if args.speed_grid:
        changes["speed_grids"] = tuple(tuple(g) for g in args.speed_grid)
    if args.speed_box:
        changes["speed_box_sizes_mm"] = tuple(args.speed_box)
    if args.speed_precision:
        changes["speed_precisions"] = tuple(args.speed_precision)
    if args.elastix_iterations is not None:
        changes["elastix"] = replace(plan.elastix, iterations=args.elastix_iterations)
    if args.ants_iterations is not None:
        changes["ants"] = replace(plan.ants, reg_iterations=tuple(args.ants_iterations))
    changes |= {
        "experiment": not args.speed_only,
        "speed": not args.no_speed,
        "peers": not args.no_peers,
        "paper_arm": not args.no_paper_arm,
        "wrong_geometry": not args.no_wrong_geometry,
        "figures": not args.no_figures,
        "grid": tuple(args.grid) if args.grid else None,
        "similarity": args.network_similarity,
        "smoothness": args.network_smoothness,
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "fit_mask": FOV_MASK if args.fit_field_of_view else None,
    }
    return replace(plan, **changes)


def run_bench_command(args) -> int:
    from rso.cli.progress import step_progress
    from rso.core.summary import format_table
    from rso.evaluation.bench.runner import run_bench

    if args.model and args.channels:
        raise InputError("--channels describes an untrained network; it cannot be combined with --model")
    if args.scale:
        return run_scale_command(args)
    plan = plan_from_args(args)
    with step_progress(not args.quiet) as progress:
        summary = run_bench(plan, Path(args.out), args.model, args.channels, progress)
    columns = ("label", "n", "box_tre_mean_mm", "box_rmse_hu", "tre_mean_mm", "declined", "seconds")
    for kind, part in summary["by_kind"].items():
        print(f"\n{kind} boxes ({part['boxes']}):")
        print(format_table([{c: row[c] for c in columns} for row in part["arms"]]))
    print(f"\nwrote {Path(args.out) / 'summary.md'}")
    return 0


def run_scale_command(args) -> int:
    """--scale: only the scale benchmark, on the demo case (rso.evaluation.bench.scale)."""
    from rso.cli.common import settings_from_args
    from rso.evaluation.bench.scale import ScalePlan, demo_scale_case, run_scale, scale_markdown
    from rso.settings import EngineSettings

    plan = ScalePlan(
        spacings=tuple(args.scale_spacings),
        iso=args.scale_iso,
        precisions=tuple(args.scale_precisions),
        engine=settings_from_args(EngineSettings, args),
        threads=args.threads,
        extent_mm=args.scale_extent,
    )
    record = run_scale(demo_scale_case(), Path(args.out), plan)
    print(scale_markdown(record))
    print(f"\nwrote {Path(args.out) / 'scale.json'} and {Path(args.out) / 'scale.md'}")
    return 0


def comma_list(kind, choices=None):
    """An argparse type: comma-separated values of ``kind`` (each one of ``choices`` when given)."""

    def parse(text: str):
        try:
            values = tuple(kind(v) for v in text.replace(" ", "").split(",") if v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
        if not values or (choices and any(v not in choices for v in values)):
            raise argparse.ArgumentTypeError(f"{text!r}: values must be {', '.join(choices or ('given',))}")
        return values

    return parse


def add_scale_arguments(parser) -> None:
    """--scale and its options: one case at several isotropic resolutions (rso.evaluation.bench.scale)."""
    from rso.evaluation.bench.scale import DEFAULT_SCALE_ISO, DEFAULT_SPACINGS, SCALE_PRECISIONS

    parser.add_argument(
        "--scale",
        action="store_true",
        help="only the scale benchmark: the demo case at several isotropic resolutions, per stage seconds, "
        "peak memory and bytes written, each resolution and precision in a fresh process; writes "
        "scale.json and scale.md",
    )
    parser.add_argument(
        "--scale-spacings",
        type=comma_list(float),
        default=DEFAULT_SPACINGS,
        metavar="MM,...",
        help=f"--scale's isotropic spacings (default {','.join(map(str, DEFAULT_SPACINGS))})",
    )
    parser.add_argument(
        "--scale-iso",
        type=int,
        default=DEFAULT_SCALE_ISO,
        metavar="N",
        help=f"--scale's ISO iterations (default {DEFAULT_SCALE_ISO})",
    )
    parser.add_argument(
        "--scale-precisions",
        type=comma_list(str, SCALE_PRECISIONS),
        default=SCALE_PRECISIONS,
        metavar="P,...",
        help="--scale's network precisions (default fp32,bf16; bf16 only where the CPU has it natively)",
    )
    parser.add_argument(
        "--scale-extent",
        type=comma_list(float),
        default=None,
        metavar="X,Y,Z",
        help="--scale: every spacing covers this box (mm) around the case's centre, air beyond the scan "
        "(485,360,282: a clinical CBCT's 49 M voxels at 1 mm; default: the case's own extent)",
    )


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="the paper's experiment on simulated CBCT with ground truth, the classical peers, speed",
        description="General, ISO-500 and ISO-100 + RSO (native, direct, and the paper's full/global) "
        "against elastix and ANTs on simulated CBCT cases with ground truth, per box kind (misaligned, "
        "residual, control), plus fp32/bf16 speed and memory; writes JSON, summary.md and figures "
        "(see bench/README.md).",
    )
    parser.add_argument(
        "--out",
        default="out/bench",
        help="output folder, its previous run's files replaced (default out/bench; name a bench/ folder "
        "to keep a run with the repository)",
    )
    _add_case_arguments(parser)
    _add_arm_arguments(parser)
    _add_speed_arguments(parser)
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: torch's, one per core); use fewer when other jobs share the cores",
    )
    add_scale_arguments(parser)
    add_engine_arguments(parser)
    parser.set_defaults(func=run_bench_command)


def _add_case_arguments(parser) -> None:
    """Which cases and boxes: the plan's case set, or folders of your own."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one case, two boxes (misaligned, control), few iterations, one speed grid",
    )
    parser.add_argument(
        "--case-set",
        choices=tuple(CASE_SETS),
        default="conebeam",
        help="which simulated cases (default conebeam; bench/README.md): "
        + "; ".join(f"{name} ({describe(cases)})" for name, cases in CASE_SETS.items()),
    )
    parser.add_argument("--cases", type=int, metavar="N", help="only the first N cases of the plan")
    parser.add_argument(
        "--case-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a simulated case folder to use instead of the plan's cases (repeatable)",
    )
    parser.add_argument(
        "--moving-phase", type=int, metavar="K", help="moving phase for --case-dir (default phases/2)"
    )
    parser.add_argument(
        "--boxes",
        type=box_plan,
        metavar="KIND=N,...",
        help="boxes per case and kind (default misaligned=2,residual=1,control=2)",
    )
    parser.add_argument(
        "--box-size", dest="box_size_mm", type=float, metavar="MM", help="box side (default 40 mm)"
    )
    parser.add_argument(
        "--fit-field-of-view",
        action="store_true",
        help="every path fits inside the case's field of view (its fov_mask.nii.gz as the fit mask): the "
        "phases limited to what the scanner saw",
    )


def _add_arm_arguments(parser) -> None:
    """The arms' iterations, and which arms to skip."""
    parser.add_argument(
        "--iso-long", type=int, metavar="N", help="the ISO-only arm's iterations (default 500)"
    )
    parser.add_argument("--iso-short", type=int, metavar="N", help="ISO before RSO (default 100)")
    parser.add_argument(
        "--rso",
        type=int,
        metavar="N",
        help="the network RSO modes' iterations per box (default 400; native RSO keeps its own)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip elastix and ANTs")
    parser.add_argument(
        "--no-paper-arm",
        action="store_true",
        help="skip the paper's RSO-400 full/global arm (about half of a cone-beam run's time)",
    )
    parser.add_argument(
        "--no-wrong-geometry",
        action="store_true",
        help="skip ISO-short and native RSO with the moving image's projection geometry slightly wrong "
        "(angles +0.5 deg, distances +1 %% or one cluster of views missing, in turn per case)",
    )
    parser.add_argument(
        "--elastix-iterations", type=int, metavar="N", help="elastix iterations per resolution"
    )
    parser.add_argument(
        "--ants-iterations",
        type=lambda t: tuple(int(v) for v in t.split(",")),
        metavar="A,B,C",
        help="ANTs SyN iterations per level (default 40,20,0)",
    )


def _add_speed_arguments(parser) -> None:
    """The speed section: its grids, precisions, boxes and iterations."""
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--speed-only", action="store_true", help="only the speed section")
    speed.add_argument("--no-speed", action="store_true", help="skip the speed section")
    parser.add_argument(
        "--speed-grid",
        type=number_list(3, int),
        action="append",
        metavar="Z,Y,X",
        help="speed grid (repeatable; default 48,80,80 and 96,160,160)",
    )
    parser.add_argument(
        "--speed-precision",
        choices=PRECISIONS[:2],
        action="append",
        help="network precision in the speed section (repeatable; default fp32 and bf16)",
    )
    parser.add_argument(
        "--speed-box",
        type=float,
        action="append",
        metavar="MM",
        help="speed box side (repeatable; default 32 and 64)",
    )
    parser.add_argument("--speed-iterations", type=int, metavar="N", help="iterations per speed measurement")
