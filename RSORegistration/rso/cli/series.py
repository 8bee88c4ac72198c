"""``series``: the DICOM series a folder holds, to pick one by UID or index (``read_image(series=...)``)."""

from __future__ import annotations

import argparse
import json

COLUMNS = (  # (title, SeriesInfo attribute or method)
    ("index", "index"),
    ("slices", "slices"),
    ("phase / time", "when"),
    ("description", "description"),
    ("series UID", "uid"),
)


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `series DIR [--json]`."""
    parser = subparsers.add_parser(
        "series",
        help="list the DICOM series in a folder (a 4D CT export holds one per phase)",
        description="List the DICOM series in a folder: index, slice count, cardiac/breathing phase or "
        "trigger/acquisition time, description and series instance UID. An image given as a folder with "
        "several series must name one, by UID or index.",
    )
    parser.add_argument("folder", metavar="DIR", help="a folder of DICOM files")
    parser.add_argument("--json", action="store_true", help="a JSON list of the series instead of a table")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from rso.core.dicom import list_series
    from rso.errors import InputError

    found = list_series(args.folder)
    if not found:
        raise InputError(f"no DICOM series in folder {args.folder}")
    if args.json:
        print(json.dumps([{**info.to_dict(), "when": info.when()} for info in found], indent=2))
    else:
        print(table(found))
    return 0


def table(found) -> str:
    """The series as an aligned text table, one line each under a title line."""
    rows = [[title for title, _ in COLUMNS]]
    for info in found:
        values = [getattr(info, name) for _, name in COLUMNS]
        rows.append([str(value() if callable(value) else value) for value in values])
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )
