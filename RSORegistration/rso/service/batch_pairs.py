"""A batch's pairs: the rows of pairs.csv read and checked, and each pair's row of the summary.

Light on purpose: a Dask worker that runs only ``rso.service.batch_dask.run_pair_process`` loads
this module, never torch (rso.service.batch describes the CSV and the summary).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rso.errors import InputError
from rso.settings import PairInputs

# Every other per-pair input `register` takes: PairInputs' fields (rso.settings) and RegisterJob's own, files
# (relative to the CSV) and plain values. A pair of phase-binned CBCTs carries each image's RTK projection
# geometry, for instance.
_OWN_COLUMNS = ("fixed", "moving", "truth", "metrics_mask")
FILE_COLUMNS = (
    *(name for name in PairInputs.FILES if name not in _OWN_COLUMNS),
    "labels",
    "labels_colors",
    "labels_reference",
    "landmarks_fixed",
    "landmarks_moving",
)
VALUE_COLUMNS = ("fixed_series", "moving_series", "prealign", "landmarks_pairing")
COLUMNS = ("fixed", "moving", "truth", "mask", "roi", "name", *FILE_COLUMNS, *VALUE_COLUMNS)
RESULT_FILES = ("report.json", "transform.h5")  # and the files the report lists (its "files")
SUMMARY_FIELDS = (
    "name",
    "status",
    "seconds",
    "wall_seconds",
    "rmse_hu",
    "tre_mm",
    "steps",
    "disk_mb",
    "session_mb",
    "error",
    "fixed",
    "moving",
)


@dataclass(frozen=True)
class Pair:
    """One row of the CSV, its paths absolute."""

    name: str
    fixed: str
    moving: str
    truth: str | None = None
    mask: str | None = None
    boxes_ras: tuple[tuple[float, ...], ...] = ()
    # (PairInputs or RegisterJob field, value) of the other columns given
    inputs: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------- the CSV
def read_pairs(csv_path: str | Path) -> list[Pair]:
    """Every row of the CSV as a Pair; InputError names the first bad row before anything runs."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"pairs file not found: {csv_path}")
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8-sig"))))
    header = [name.strip() for name in (rows[0].keys() if rows else [])]
    if not rows or not {"fixed", "moving"} <= set(header):
        raise InputError(f"{csv_path.name} needs a header with columns fixed and moving and at least one row")
    unknown = sorted(set(header) - set(COLUMNS))
    if unknown:
        raise InputError(
            f"{csv_path.name}: unknown column(s) {', '.join(unknown)}; columns: {', '.join(COLUMNS)}"
        )
    pairs = [
        _pair(index, {k.strip(): (v or "").strip() for k, v in row.items()}, csv_path.parent)
        for index, row in enumerate(rows, start=1)
    ]
    names = [pair.name for pair in pairs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"{csv_path.name}: pair names must be unique; repeated: {', '.join(duplicates)}")
    return pairs


def _pair(index: int, row: dict, base: Path) -> Pair:
    where = f"row {index}"
    for column in ("fixed", "moving"):
        if not row.get(column):
            raise InputError(f"{where}: {column} is empty")
    path = lambda column: str((base / row[column]).resolve()) if row.get(column) else None  # noqa: E731
    name = row.get("name") or f"{index:03d}-{Path(row['moving']).name.split('.')[0]}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(
            f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)"
        )
    boxes = _boxes(row.get("roi", ""), where)
    inputs = tuple((column, path(column)) for column in FILE_COLUMNS if row.get(column))
    inputs += tuple((column, row[column]) for column in VALUE_COLUMNS if row.get(column))
    for first, second in (("fixed_geometry", "moving_geometry"), ("landmarks_fixed", "landmarks_moving")):
        if bool(row.get(first)) != bool(row.get(second)):
            raise InputError(f"{where}: give {first} and {second} together, or neither")
    # The machines of a cluster share one file system (docs/remote.md): a path missing here is missing there.
    for column in ("fixed", "moving", "truth", "mask", *FILE_COLUMNS):
        if row.get(column) and not Path(path(column)).exists():
            raise InputError(f"{where}: {column} not found: {path(column)}")
    return Pair(name, path("fixed"), path("moving"), path("truth"), path("mask"), boxes, inputs)


def _boxes(text: str, where: str) -> tuple[tuple[float, ...], ...]:
    boxes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            values = tuple(float(v) for v in re.split(r"[\s,]+", part))
        except ValueError:
            values = ()
        if len(values) != 6:
            raise InputError(f"{where}: roi {part!r} is not 6 numbers R1 A1 S1 R2 A2 S2 (RAS mm)")
        boxes.append(values)
    return tuple(boxes)


# ---------------------------------------------------------------------------------- the rows
def pair_complete(folder: Path) -> bool:
    """Whether a pair's results are all there: a report with its final metrics, and every file it lists."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    files = (*RESULT_FILES, *report.get("files", ()))
    return report.get("final") is not None and all((folder / name).is_file() for name in files)


def result_row(pair: Pair, folder: Path, status: str, wall: float | None, session_bytes: int | None) -> dict:
    """A summary row from a pair's report.json: its seconds (the steps'), final RMSE and TRE, disk."""
    report = json.loads((folder / "report.json").read_text())
    final = report.get("final") or {}
    return {
        "name": pair.name,
        "status": status,
        "seconds": round(sum(step["seconds"] for step in report["steps"]), 2),
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "rmse_hu": final.get("rmse_hu"),
        "tre_mm": (final.get("tre_mm") or {}).get("mean"),
        "steps": "+".join(step["kind"] for step in report["steps"]),
        "disk_mb": megabytes(disk_bytes(folder)),
        "session_mb": megabytes(session_bytes) if session_bytes is not None else None,
        "error": None,
        "fixed": pair.fixed,
        "moving": pair.moving,
    }


def failed_row(pair: Pair, error: str, wall: float | None) -> dict:
    return {
        **dict.fromkeys(SUMMARY_FIELDS),
        "name": pair.name,
        "status": "failed",
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "error": " ".join(error.split())[:500],
        "fixed": pair.fixed,
        "moving": pair.moving,
    }


def disk_bytes(path: Path) -> int:
    """What ``du`` counts: allocated blocks (file sizes where the platform has no block count)."""
    if not path.exists():
        return 0
    files = (
        [path]
        if path.is_file()
        else [Path(root) / name for root, _, names in os.walk(path) for name in names]
    )
    total = 0
    for file in files:
        stat = file.stat()
        total += stat.st_blocks * 512 if hasattr(stat, "st_blocks") else stat.st_size
    return total


def megabytes(count: int) -> float:
    return round(count / 1e6, 2)
