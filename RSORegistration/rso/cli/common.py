"""What every subcommand shares: number lists, the engine's options, one-line errors."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from rso.errors import Cancelled, InputError
from rso.options import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_SEED,
    DEFAULT_SIMILARITY,
    DEFAULT_SMOOTHNESS,
    DEVICES,
    PRECISIONS,
    SIMILARITIES,
)

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130
# Options whose comma-separated values may start with a minus sign (RAS coordinates), which
# argparse would otherwise take for an option.
NUMBER_LIST_OPTIONS = ("--roi", "--roi-ijk", "--grid")


def number_list(count: int, kind=float):
    """An argparse type: ``count`` comma-separated numbers."""

    def parse(text: str):
        try:
            values = [kind(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {count} comma-separated numbers") from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r} has {len(values)} numbers; {count} expected")
        return values

    return parse


def whole_numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated whole numbers") from None


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --channels, --grid, --similarity, --smoothness, --device, --precision, --seed,
    --allow-non-ct."""
    parser.add_argument("--model", metavar="CKPT", help="general model checkpoint (default: the bundled one)")
    parser.add_argument(
        "--channels",
        type=whole_numbers,
        help="channels of an untrained network when no model is used (e.g. 8,16,32,64,128)",
    )
    parser.add_argument(
        "--grid", type=number_list(3, int), metavar="Z,Y,X", help="model grid (multiples of 16)"
    )
    parser.add_argument("--similarity", choices=SIMILARITIES, default=DEFAULT_SIMILARITY)
    parser.add_argument(
        "--smoothness", type=float, default=DEFAULT_SMOOTHNESS, metavar="W", help="smoothness weight"
    )
    parser.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="network arithmetic: auto (default) picks bf16 where the hardware has it natively, "
        "2-3x faster than fp32 at the same accuracy; a step that diverges in bf16 is repeated in fp32",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--allow-non-ct",
        action="store_true",
        help="register images that do not look like CT in Hounsfield units (the model expects HU): such an "
        "image's network input is normalised from its own 0.5th-99.5th percentiles instead of the HU "
        "formula, and the session keeps that choice",
    )


def add_geometry_arguments(parser, what: str = "ISO and native RSO compare") -> None:
    """--fixed-geometry / --moving-geometry (RTK XML) and --placement: artefact matching's inputs."""
    parser.add_argument(
        "--fixed-geometry",
        metavar="XML",
        help="the RTK projection geometry the fixed image (a phase of a 4D CBCT) was reconstructed from, "
        f"as RTK writes it (ThreeDCircularProjectionGeometry): with --moving-geometry, {what} the images "
        "artefact-matched, each seen through the other's geometry (docs/simulator.md)",
    )
    parser.add_argument("--moving-geometry", metavar="XML", help="the moving image's RTK projection geometry")
    parser.add_argument(
        "--placement",
        metavar="TFM",
        help="where the images sit in RTK's frame: an ITK affine transform file mapping RTK-frame points "
        "(mm) to the images' LPS points (default: the image centre is the isocentre, superior along "
        "RTK's rotation axis y; docs/simulator.md)",
    )


def engine_from_args(args):
    """The EngineSettings the engine options ask for."""
    from rso.core.losses import LossConfig
    from rso.core.workflow import EngineSettings

    return EngineSettings(
        model=args.model,
        channels=args.channels,
        grid=tuple(args.grid) if args.grid else None,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        loss=LossConfig(similarity=args.similarity, smoothness_weight=args.smoothness),
        allow_non_ct=args.allow_non_ct,
    )


@contextmanager
def one_line_errors():
    """InputError -> 'error: ...' and exit 2; Ctrl-C -> 'cancelled' and exit 130."""
    try:
        yield
    except InputError as exc:
        print(f"rso-registration: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except (Cancelled, KeyboardInterrupt):
        print("rso-registration: cancelled; nothing was written for the step in flight", file=sys.stderr)
        raise SystemExit(EXIT_CANCELLED) from None


def attach_number_lists(argv: list[str]) -> list[str]:
    """``--roi -12,3,...`` -> ``--roi=-12,3,...`` so that negative coordinates just work."""
    joined, pending = [], None
    for arg in argv:
        if pending is not None:
            joined.append(f"{pending}={arg}")
            pending = None
        elif arg in NUMBER_LIST_OPTIONS:
            pending = arg
        else:
            joined.append(arg)
    return joined + ([pending] if pending else [])
