"""What every subcommand shares: number lists, the engine's options, one-line errors."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from dataclasses import fields

from rso.errors import Cancelled, InputError
from rso.settings import EngineSettings, flag_of, kind_of

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


_PARSERS = {"int": int, "float": float, "str": str, "ints": whole_numbers, "ints3": number_list(3, int)}


def add_settings(parser, settings: type, prefix: str = "") -> None:
    """One option per field of a settings dataclass (rso.settings): its flag, help, choices and default come
    from the field, and its dest is ``prefix`` + the field's name (``settings_from_args``; ISO's and RSO's
    fields share names)."""
    for f in fields(settings):
        kind, meta = kind_of(f), f.metadata
        options = {"dest": prefix + f.name, "default": f.default, "help": meta["help"]}
        if kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _PARSERS[kind]
            options["metavar"] = meta["metavar"]
            options["choices"] = meta["choices"]
            if f.default is not None:
                options["help"] += f" (default: {f.default})"
        parser.add_argument(flag_of(f), **{k: v for k, v in options.items() if v is not None})


def settings_from_args(settings: type, args, prefix: str = ""):
    """The settings the options ``add_settings`` made (with the same ``prefix``) ask for."""
    return settings.from_dict({f.name: getattr(args, prefix + f.name) for f in fields(settings)})


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --channels, --grid, --device, --precision, --seed, --similarity, --smoothness,
    --allow-non-ct (rso.settings.EngineSettings)."""
    add_settings(parser, EngineSettings)


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


def engine_from_args(args) -> EngineSettings:
    """The EngineSettings the engine options ask for."""
    return settings_from_args(EngineSettings, args)


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
