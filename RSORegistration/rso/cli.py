"""The ``rso-registration`` command line.

Bad input ends with a one-line error and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from contextlib import contextmanager

from . import __version__, silence_known_warnings
from .errors import Cancelled, InputError
from .options import COMPOSITIONS, DEFAULT_COMPOSITION, DEFAULT_PRECISION, DEFAULT_RSO_MODE, DEVICES, PRECISIONS, RSO_MODES, SIMILARITIES

log = logging.getLogger("rso")

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


def number_list(count: int, kind=float):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {count} comma-separated numbers") from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r} has {len(values)} numbers; {count} expected")
        return values

    return parse


def add_register(subparsers) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register a moving image to a fixed one: general model, ISO, then RSO on each box",
        description="General model -> ISO -> RSO on each --roi/--roi-ijk box, in order; writes the "
        "warped image, the displacement field, the difference image and a report.",
    )
    parser.add_argument("--fixed", required=True, help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    parser.add_argument("--moving", required=True, help="moving image")
    parser.add_argument("--out", required=True, help="output folder")
    add_model_arguments(parser)
    parser.add_argument("--iso", type=int, default=100, metavar="N", help="ISO iterations (default 100, the paper's)")
    parser.add_argument("--roi", type=number_list(6), action="append", default=[], metavar="R1,A1,S1,R2,A2,S2",
                        help="box corners in RAS mm as Slicer shows them; repeatable, applied in order")
    parser.add_argument("--roi-ijk", type=number_list(6, int), action="append", default=[], metavar="I1,J1,K1,I2,J2,K2",
                        help="box in fixed-image voxel indices (both ends included); repeatable")
    parser.add_argument("--rso", type=int, default=400, metavar="N", help="RSO iterations per box (default 400)")
    parser.add_argument("--rso-mode", choices=RSO_MODES, default=DEFAULT_RSO_MODE,
                        help="full: whole image fed (the paper); crop: only a sub-volume around the box; "
                        "direct: optimise the displacement in the box itself, no network (needs --compose local)")
    parser.add_argument("--compose", choices=COMPOSITIONS, default=DEFAULT_COMPOSITION,
                        help="global: the fine-tuned field everywhere (the paper); local: the box only, blended")
    parser.add_argument("--blend-margin", type=float, default=15.0, metavar="MM", help="local blend margin (mm)")
    parser.add_argument("--truth", help="ground-truth displacement field (ITK, fixed -> moving) for TRE")
    parser.add_argument("--reference", help="image to measure RMSE against (default: the fixed image)")
    parser.add_argument("--mask", help="where whole-image and box metrics are measured, e.g. a body mask (default: everywhere)")
    parser.add_argument("--no-figure", action="store_true", help="skip report.png")
    parser.set_defaults(func=run_register)


def add_model_arguments(parser) -> None:
    parser.add_argument("--model", metavar="CKPT", help="general model checkpoint (default: the bundled one)")
    parser.add_argument("--channels", type=lambda t: tuple(int(v) for v in t.split(",")),
                        help="channels of an untrained network when no model is used (e.g. 8,16,32,64,128)")
    parser.add_argument("--grid", type=number_list(3, int), metavar="Z,Y,X", help="model grid (multiples of 16)")
    parser.add_argument("--similarity", choices=SIMILARITIES, default="mse")
    parser.add_argument("--smoothness", type=float, default=0.01, metavar="W", help="smoothness weight")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="network arithmetic: auto (default) picks bf16 where the hardware has it natively, "
                        "2-3x faster than fp32 at the same accuracy; a step that diverges in bf16 is repeated in fp32")
    parser.add_argument("--seed", type=int, default=0)


def model_config_from(args):
    """The untrained network's shape asked for with --channels, or None (use the bundled model)."""
    from .model import ModelConfig

    return ModelConfig(channels=tuple(args.channels)) if args.channels else None


def run_register(args) -> int:
    from .workflow import RegisterJob, run_register_job

    job = RegisterJob.from_args(args)
    run_register_job(job, progress_bar=not args.quiet)
    return 0


def add_subcommands(subparsers) -> None:
    """Every subcommand, each registered by the module that owns it."""
    add_register(subparsers)
    for module_name in ("bench", "demo", "fetch", "simulate", "train", "worker"):
        module = importlib.import_module(f"rso.{module_name}")
        module.add_subcommand(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rso-registration", description="Deep interactive deformable registration (RSO).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_output_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_subcommands(subparsers)
    for subparser in subparsers.choices.values():  # accepted after the subcommand too
        add_output_options(subparser, default=argparse.SUPPRESS)
    return parser


def add_output_options(parser, default) -> None:
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bar; log lines only")
    parser.add_argument("--verbose", action="store_true", default=default, help="debug logging")


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


# Options whose comma-separated values may start with a minus sign (RAS coordinates), which
# argparse would otherwise take for an option.
NUMBER_LIST_OPTIONS = ("--roi", "--roi-ijk", "--grid")


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(attach_number_lists(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    silence_known_warnings()
    with one_line_errors():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
