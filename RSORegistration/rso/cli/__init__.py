"""The ``rso-registration`` command line: one small module per subcommand; argparse lives only here.

Bad input ends with a one-line error and exit code 2, before anything is written. The modules
import the engine inside their run functions, so that ``--help`` and ``fetch-data`` start quickly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rso import __version__, silence_known_warnings
from rso.cli.common import EXIT_BAD_INPUT, attach_number_lists, one_line_errors
from rso.cli.launcher import relaunch_with_tcmalloc

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

SUBCOMMANDS = (
    "register",
    "review",
    "batch",
    "demo",
    "bench",
    "fetch",
    "simulate",
    "phases",
    "series",
    "train",
    "worker",
    "slicer_install",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rso-registration", description="Deep interactive deformable registration (RSO)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_output_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"rso.cli.{name}").add_subcommand(subparsers)
    for subparser in subparsers.choices.values():  # accepted after the subcommand too
        add_output_options(subparser, default=argparse.SUPPRESS)
    return parser


def add_output_options(parser, default) -> None:
    parser.add_argument(
        "--quiet", action="store_true", default=default, help="no progress bar; log lines only"
    )
    parser.add_argument("--verbose", action="store_true", default=default, help="debug logging")


def main(argv=None) -> int:
    """The console script (argv None: the process's own arguments, with tcmalloc preloaded for heavy work)."""
    if argv is None:
        relaunch_with_tcmalloc(sys.argv[1:])
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(attach_number_lists(argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    silence_known_warnings()
    with one_line_errors():
        return args.func(args)
