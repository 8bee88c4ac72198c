"""``phases``: a scanner's projections -> one FDK image per breathing phase, each with its RTK geometry."""

from __future__ import annotations

import argparse
from pathlib import Path

from rso.acquisition.signal import PHASE_MODELS, SIGNAL_KINDS
from rso.cli.common import number_list
from rso.core.projection.conebeam import FDK_HANN_CUT
from rso.core.projection.geometry import RECONSTRUCTIONS


def spacing_mm(text: str) -> tuple[float, float, float]:
    """An argparse type: one spacing (isotropic) or three (i, j, k), in mm."""
    values = text.replace(" ", "").split(",")
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a spacing in mm (one number or three)") from None
    if len(numbers) not in (1, 3) or min(numbers) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: one positive spacing or three (i,j,k) in mm")
    return tuple(numbers * 3) if len(numbers) == 1 else tuple(numbers)


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `phases --projections PATH --out DIR [--geometry FILE] [--signal FILE] [--phases 10] ...`."""
    parser = subparsers.add_parser(
        "phases",
        help="reconstruct breathing phases from a scanner's projections (Elekta, Varian, MHA) with RTK",
        description="Read the projections (Elekta .his, Varian .hnd/.xim, MHA stacks) and the scanner "
        "geometry through RTK, sort the projections into breathing phases (a signal file, or the "
        "Amsterdam shroud of the projections) and write one image per phase (FDK, or --reconstruction tv) "
        "with its RTK geometry (see docs/scanner-import.md).",
    )
    _add_scan_arguments(parser.add_argument_group("scan"))
    _add_signal_arguments(parser.add_argument_group("breathing signal"))
    _add_output_arguments(parser.add_argument_group("output"))
    parser.set_defaults(func=_run)
    return parser


def _add_scan_arguments(scan) -> None:
    scan.add_argument(
        "--projections", required=True, type=Path, help="a folder of projection files, or one file (a stack)"
    )
    scan.add_argument(
        "--geometry",
        type=Path,
        help="RTK geometry XML, Elekta _Frames.xml or FRAME.DBF, or Varian Scan.xml (default: the one "
        "found beside the projections)",
    )
    scan.add_argument("--regexp", metavar="RE", help="keep the projection files whose names match RE")
    scan.add_argument("--dicom-uid", metavar="UID", help="Elekta FRAME.DBF: the acquisition's DICOM UID")
    scan.add_argument(
        "--binning", type=int, default=1, metavar="N", help="shrink projections N x N (default 1)"
    )


def _add_signal_arguments(signal) -> None:
    signal.add_argument(
        "--signal", type=Path, metavar="TXT", help="one value per projection (default: from the projections)"
    )
    signal.add_argument(
        "--signal-kind",
        choices=SIGNAL_KINDS,
        default="phase",
        help="phase: values in [0, 1), 0 = end exhale (RTK's signal files, default); amplitude: larger = "
        "deeper inhale, turned into a phase",
    )
    signal.add_argument(
        "--phase-model",
        choices=PHASE_MODELS,
        default="minima",
        help="amplitude -> phase: 0 at minima (default)",
    )
    signal.add_argument("--invert-signal", action="store_true", help="negate the amplitude (falls on inhale)")


def _add_output_arguments(output) -> None:
    output.add_argument("--out", required=True, type=Path, help="folder to write (made whole, atomically)")
    output.add_argument("--phases", type=int, default=10, help="breathing phases (default 10)")
    output.add_argument(
        "--spacing", type=spacing_mm, metavar="MM", help="voxel spacing: MM or I,J,K (default 2)"
    )
    output.add_argument(
        "--size", type=number_list(3, int), metavar="I,J,K", help="voxels (default: the field of view)"
    )
    output.add_argument("--reference", type=Path, metavar="IMAGE", help="reconstruct on this image's grid")
    output.add_argument(
        "--placement", type=Path, metavar="TFM", help="ITK affine: RTK-frame points -> image LPS points"
    )
    output.add_argument(
        "--hann",
        type=float,
        default=FDK_HANN_CUT,
        metavar="CUT",
        help=f"ramp filter's Hann cut-off in [0, 1] (default {FDK_HANN_CUT}, as artefact matching)",
    )
    output.add_argument(
        "--reconstruction",
        choices=RECONSTRUCTIONS,
        default="fdk",
        help="fdk: as the vendors reconstruct (default); tv: RTK's ADMM total variation from FDK, "
        "~20 times slower, far fewer streaks on a half fan (docs/scanner-import.md)",
    )
    output.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _run(args: argparse.Namespace) -> int:
    from rso.acquisition.pipeline import OutputGrid, ScanSource, SignalSource, make_phases

    summary = make_phases(
        ScanSource(args.projections, args.geometry, args.regexp, args.dicom_uid, args.binning),
        SignalSource(args.signal, args.signal_kind, args.phase_model, args.invert_signal),
        OutputGrid(args.spacing, tuple(args.size) if args.size else None, args.reference, args.placement),
        args.out,
        phases=args.phases,
        hann_cut=args.hann,
        overwrite=args.overwrite,
        reconstruction=args.reconstruction,
    )
    for row in summary["phases"]:
        print(
            f"{args.out / row['image']}\t{row['views']} views\t{row['clusters']} clusters\t"
            f"{row['arc_deg']:.0f} deg"
        )
    if args.reconstruction == "tv":
        print(tv_advice(summary["geometry"]["half_fan"]))
    return 0


def tv_advice(half_fan: bool) -> str:
    """What to do with TV phases: register them with their geometry files (each says it is a TV phase, so
    matching stays off and native RSO follows the scan's rule, rso.core.projection.scan)."""
    advice = (
        "TV phases: register them with their geometry files (--fixed-geometry/--moving-geometry): "
        "artefact matching stays off (it reconstructs by FDK and would bring their streaks back), and the "
        "files tell native RSO what the scan was"
    )
    if half_fan:
        advice += (
            "\nhalf fan: native RSO declines box steps on such phases (its corrections were wrong as often "
            "as right in the benchmark; docs/results.md); without the geometry files it cannot tell"
        )
    return advice
