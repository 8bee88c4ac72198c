"""Landmark file readers: every reader returns points in LPS millimetres (ITK's frame, the engine's).

Slicer shows RAS (x and y negated; ``rso.core.geometry.ras_to_lps``). What each format states:

* Slicer markups ``.mrk.json`` (markups-schema-v1.0.x): ``markups[0].controlPoints[].position`` in
  the markup's ``coordinateSystem`` (``LPS`` when absent, the schema's default) and ``coordinateUnits``
  (``mm`` or ``um``). Labels are kept. A point Slicer lists without a position (``positionStatus``
  ``undefined``/``missing``) is refused: dropping it would shift every later pair.
* Slicer ``.fcsv``: ``# CoordinateSystem = LPS|RAS|1|0`` (the numbers are Slicer's old codes: 0 RAS,
  1 LPS; a file without the line is RAS, as Slicer reads it). Columns are Slicer's fixed ones
  (``id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID``): Slicer ignores the columns line too.
* CSV/TSV. **Rule: the file states its system, or it is refused.** The first row that is not a ``#``
  comment names the columns (case-insensitive): ``l,p,s`` (LPS) or ``r,a,s`` (RAS), as Slicer's
  "export control points to table/CSV" writes them, or ``x,y,z`` with a comment line above the
  header ``# coordinates: LPS`` (or ``= RAS``). An optional ``label`` column gives the labels; a
  ``defined`` column of 0 marks a point without a position (refused). Other columns are ignored.
* DIR-Lab text: one point per line, three 1-based voxel indices (x = column, y = row, z = slice) on a
  named image: LPS = TransformContinuousIndexToPhysicalPoint(index - 1). **Assumed**: the image is the
  DIR-Lab volume in its file's own order (the ``.img`` read through a header with its DimSize and an
  identity-ordered axis list, so ITK index k is the k-th slice stored in the file). A volume converted
  with the slices reversed (some NIfTI conversions) needs ``flip_z=True`` (k = size_z - z). A point
  outside the image is refused: it is the usual sign of the wrong image or the wrong z convention.
* elastix/transformix input point files: ``point`` (LPS mm) or ``index`` (0-based continuous ITK
  indices on an image), then the count, then one row per point. transformix's ``outputpoints.txt``
  gives its ``OutputPoint`` column (the inputs mapped through the transform, LPS mm).
* VTK legacy ``.vtk`` POLYDATA/UNSTRUCTURED_GRID ``POINTS``, ASCII or binary (big-endian), parsed here
  without vtk. The header line's ``SPACE=RAS|LPS`` (Slicer writes it) gives the system; without it,
  LPS (what Slicer and ITK assume).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import ModelGrid, ras_to_lps
from rso.core.imageio import index_to_physical_matrix
from rso.errors import InputError

# Slicer's fixed .fcsv columns (vtkMRMLMarkupsFiducialStorageNode reads by position).
FCSV_XYZ, FCSV_LABEL = slice(1, 4), 11
FCSV_SYSTEMS = {"LPS": "LPS", "RAS": "RAS", "1": "LPS", "0": "RAS"}
MARKUPS_UNITS_MM = {"mm": 1.0, "um": 1e-3}
UNPLACED = {"undefined", "missing"}
CSV_SYSTEM_COMMENT = re.compile(r"^#\s*coordinate(?:s|\s*system)\s*[:=]\s*(\w+)\s*$", re.IGNORECASE)
CSV_AXES = {("l", "p", "s"): "LPS", ("r", "a", "s"): "RAS", ("x", "y", "z"): None}
VTK_POINTS = re.compile(rb"^POINTS[ \t]+(\d+)[ \t]+(\w+)[ \t]*\r?\n", re.MULTILINE)
VTK_BINARY_TYPES = {"float": ">f4", "double": ">f8", "int": ">i4", "vtktypeint64": ">i8"}
TRANSFORMIX_OUTPUT = re.compile(r"OutputPoint\s*=\s*\[([^\]]*)\]")
INSIDE_TOLERANCE = 1e-6  # voxels: a point on an image's outer voxel boundary is inside


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Points in LPS mm, shape (N, 3) float64 (read-only), with one label per point when the file had any."""

    points: np.ndarray
    labels: tuple[str, ...] | None = None

    def __post_init__(self):
        points = np.array(self.points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise InputError(f"landmarks must be a non-empty (N, 3) array, got shape {points.shape}")
        if not np.isfinite(points).all():
            raise InputError("landmarks hold a non-finite coordinate")
        points.setflags(write=False)
        object.__setattr__(self, "points", points)
        if self.labels is not None:
            labels = tuple(str(label) for label in self.labels)
            if len(labels) != len(points):
                raise InputError(f"{len(labels)} landmark labels for {len(points)} points")
            object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.points)


def _labels_or_none(labels: list[str]) -> tuple[str, ...] | None:
    return tuple(labels) if any(label.strip() for label in labels) else None


def _in_lps(points, system: str, where: str) -> np.ndarray:
    system = str(system).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"{where}: coordinate system {system!r} is neither LPS nor RAS")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return ras_to_lps(points) if system == "RAS" else points


def _numbers(values, where: str) -> list[float]:
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected numbers, got {list(values)!r}") from None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not a text file") from None


# --- image geometry: voxel indices -> LPS mm -------------------------------------------------------------


def index_to_lps(index_xyz, image, where: str) -> np.ndarray:
    """Continuous 0-based ITK indices (N, 3), order (i, j, k) = (x, y, z), on ``image`` -> LPS mm (N, 3).

    ``image`` is a ``sitk.Image``, a ``ModelGrid`` or the path of an image (only its header is read).
    An index beyond the image's outer voxel boundary (-0.5 .. size - 0.5) is refused.
    """
    matrix, size = _index_frame(image)
    index_xyz = np.asarray(index_xyz, dtype=np.float64).reshape(-1, 3)
    lowest, highest = -0.5 - INSIDE_TOLERANCE, np.array(size) - 0.5 + INSIDE_TOLERANCE
    outside = np.flatnonzero(((index_xyz < lowest) | (index_xyz > highest)).any(axis=1))
    if outside.size:
        first = outside[0]
        raise InputError(
            f"{where}: point {first + 1} (index {index_xyz[first].round(2).tolist()}) lies outside the "
            f"{'x'.join(map(str, size))} image: wrong image, or wrong index convention?"
        )
    return index_xyz @ matrix[:3, :3].T + matrix[:3, 3]


def _index_frame(image) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(4x4 matrix taking an (i, j, k, 1) index to LPS mm, size (x, y, z)) of an image, grid or file."""
    if isinstance(image, ModelGrid):
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = image.index_to_lps, image.origin
        return matrix, tuple(int(n) for n in image.shape[::-1])
    if isinstance(image, (str, os.PathLike)):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"the landmarks' image could not be read: {image}") from None
        image = sitk.Image([1] * reader.GetDimension(), sitk.sitkUInt8)
        image.SetSpacing(reader.GetSpacing())
        image.SetOrigin(reader.GetOrigin())
        image.SetDirection(reader.GetDirection())
        size = reader.GetSize()
    elif isinstance(image, sitk.Image):
        size = image.GetSize()
    else:
        raise InputError(
            f"the landmarks' image must be an image, a grid or a path, not {type(image).__name__}"
        )
    if len(size) != 3:
        raise InputError(f"the landmarks' image must be 3-D, it has {len(size)} dimensions")
    return index_to_physical_matrix(image), tuple(int(n) for n in size)


# --- readers ---------------------------------------------------------------------------------------------


def read_markups_json(path: str | os.PathLike) -> Landmarks:
    """A Slicer markups ``.mrk.json`` file's first markup's control points."""
    path = Path(path)
    try:
        document = json.loads(_text(path))
        markups = document["markups"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{path.name} is not a Slicer markups file (no 'markups' list)") from None
    if not isinstance(markups, list) or len(markups) != 1:
        count = len(markups) if isinstance(markups, list) else 0
        raise InputError(f"{path.name} holds {count} markups; save one point list per file")
    markup = markups[0]
    units = markup.get("coordinateUnits", "mm")
    units = units[0] if isinstance(units, list) and units else units
    if units not in MARKUPS_UNITS_MM:
        raise InputError(f"{path.name}: coordinate units {units!r} are neither mm nor um")
    positions, labels = [], []
    for number, point in enumerate(markup.get("controlPoints") or [], start=1):
        label = str(point.get("label", ""))
        if point.get("positionStatus", "defined") in UNPLACED or "position" not in point:
            raise InputError(f"{path.name}: control point {number} ({label}) has no position")
        position = _numbers(point["position"], f"{path.name} control point {number}")
        if len(position) != 3:
            raise InputError(f"{path.name}: control point {number} has {len(position)} coordinates")
        positions.append(position)
        labels.append(label)
    if not positions:
        raise InputError(f"{path.name} holds no control points")
    points = _in_lps(positions, markup.get("coordinateSystem", "LPS"), path.name) * MARKUPS_UNITS_MM[units]
    return Landmarks(points, _labels_or_none(labels))


def read_fcsv(path: str | os.PathLike) -> Landmarks:
    """A Slicer ``.fcsv`` markups fiducial file (Slicer 4.x and 5.x)."""
    path = Path(path)
    system, rows = "RAS", []
    for line in _text(path).splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip().lower() == "coordinatesystem":
                if value.strip().upper() not in FCSV_SYSTEMS:
                    raise InputError(f"{path.name}: unknown CoordinateSystem {value.strip()!r}")
                system = FCSV_SYSTEMS[value.strip().upper()]
        elif line.strip():
            rows.append(line)
    positions, labels = [], []
    for number, row in enumerate(csv.reader(rows), start=1):
        positions.append(_numbers(row[FCSV_XYZ], f"{path.name} point {number}"))
        labels.append(row[FCSV_LABEL] if len(row) > FCSV_LABEL else "")
        if len(positions[-1]) != 3:
            raise InputError(f"{path.name}: point {number} has fewer than 3 coordinates")
    if not positions:
        raise InputError(f"{path.name} holds no points")
    return Landmarks(_in_lps(positions, system, path.name), _labels_or_none(labels))


def read_csv(path: str | os.PathLike) -> Landmarks:
    """A CSV (or ``.tsv``) table of points whose header states the coordinate system (module docstring)."""
    path = Path(path)
    stated, lines = None, []
    for line in _text(path).splitlines():
        if line.startswith("#"):
            if match := CSV_SYSTEM_COMMENT.match(line.strip()):
                stated = match.group(1).upper()
        elif line.strip():
            lines.append(line)
    rows = list(csv.reader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not rows:
        raise InputError(f"{path.name} holds no header and no points")
    header = [name.strip().lower() for name in rows[0]]
    axes = next((axes for axes in CSV_AXES if set(axes) <= set(header)), None)
    if axes is None:
        raise InputError(f"{path.name}: the header names no l,p,s / r,a,s / x,y,z columns: {rows[0]}")
    system = CSV_AXES[axes] or stated
    if system is None or (stated and stated != system):
        raise InputError(
            f"{path.name} does not state its coordinate system clearly: name the columns l,p,s or r,a,s, "
            "or add a '# coordinates: LPS' (or RAS) line above an x,y,z header"
        )
    columns = [header.index(axis) for axis in axes]
    data = rows[1:]
    if "defined" in header:
        undefined = [n for n, row in enumerate(data, 1) if row[header.index("defined")].strip() in ("0", "")]
        if undefined:
            raise InputError(f"{path.name}: point {undefined[0]} has no position (defined = 0)")
    short = [n for n, row in enumerate(data, 2) if len(row) < len(header)]
    if short:
        raise InputError(f"{path.name}: row {short[0]} has fewer cells than the header")
    positions = [_numbers([row[c] for c in columns], f"{path.name} row {n}") for n, row in enumerate(data, 2)]
    if not positions:
        raise InputError(f"{path.name} holds no points")
    labels = [row[header.index("label")] for row in data] if "label" in header else None
    return Landmarks(_in_lps(positions, system, path.name), labels and _labels_or_none(labels))


def read_dirlab(path: str | os.PathLike, image, flip_z: bool = False) -> Landmarks:
    """DIR-Lab 1-based voxel indices (x, y, z) on ``image`` (a sitk.Image, ModelGrid or path) -> LPS mm."""
    path = Path(path)
    rows = [line.replace(",", " ").split() for line in _text(path).splitlines() if line.strip()]
    if not rows or any(len(row) != 3 for row in rows):
        raise InputError(f"{path.name}: a DIR-Lab file has three voxel indices on every line")
    indices = np.array([_numbers(row, f"{path.name} line {n}") for n, row in enumerate(rows, 1)])
    index = indices - 1.0
    if flip_z:
        index[:, 2] = _index_frame(image)[1][2] - indices[:, 2]
    return Landmarks(index_to_lps(index, image, path.name))


def read_elastix_points(path: str | os.PathLike, image=None) -> Landmarks:
    """An elastix/transformix ``point``/``index`` input file, or transformix's ``outputpoints.txt``."""
    path = Path(path)
    lines = [line.strip() for line in _text(path).splitlines() if line.strip()]
    if lines and TRANSFORMIX_OUTPUT.search(lines[0]):
        found = [TRANSFORMIX_OUTPUT.search(line) for line in lines]
        return Landmarks([_numbers(m.group(1).split(), path.name) for m in found if m])
    kind = lines[0].lower() if lines else ""
    if kind not in ("point", "index") or len(lines) < 2 or not lines[1].isdigit():
        raise InputError(f"{path.name}: an elastix point file starts with 'point' or 'index', then the count")
    rows = [_numbers(line.split(), f"{path.name} line {n}") for n, line in enumerate(lines[2:], 3)]
    if len(rows) != int(lines[1]) or any(len(row) != 3 for row in rows):
        raise InputError(f"{path.name} announces {lines[1]} 3-D points but holds {len(rows)} rows")
    if kind == "point":
        return Landmarks(rows)
    if image is None:
        raise InputError(f"{path.name} holds voxel indices: give the image they were placed on")
    return Landmarks(index_to_lps(rows, image, path.name))


def read_vtk_points(path: str | os.PathLike) -> Landmarks:
    """The POINTS of a legacy VTK polydata (or unstructured grid) file, ASCII or binary."""
    path = Path(path)
    data = path.read_bytes()
    head = data.split(b"\n", 4)
    if len(head) < 5 or not head[0].startswith(b"# vtk DataFile"):
        raise InputError(f"{path.name} is not a legacy VTK file (an XML .vtp is not read here)")
    space = re.search(rb"SPACE=(\w+)", head[1])
    system = space.group(1).decode() if space else "LPS"
    encoding, dataset = head[2].strip().upper(), head[3].split()
    if dataset[-1:] not in ([b"POLYDATA"], [b"UNSTRUCTURED_GRID"]):
        raise InputError(f"{path.name}: a {b' '.join(dataset).decode()} file holds no point list")
    match = VTK_POINTS.search(data)
    if match is None or int(match.group(1)) == 0:
        raise InputError(f"{path.name} holds no POINTS")
    count, kind = int(match.group(1)), match.group(2).decode().lower()
    body = data[match.end() :]
    if encoding == b"BINARY":
        if kind not in VTK_BINARY_TYPES:
            raise InputError(f"{path.name}: binary POINTS of type {kind} are not read here")
        dtype = np.dtype(VTK_BINARY_TYPES[kind])
        if len(body) < 3 * count * dtype.itemsize:
            raise InputError(f"{path.name} ends inside its POINTS")
        values = np.frombuffer(body, dtype, count=3 * count).astype(np.float64)
    else:
        tokens = body.split(maxsplit=3 * count)[: 3 * count]
        values = np.array(_numbers(tokens, path.name)) if len(tokens) == 3 * count else []
        if len(values) != 3 * count:
            raise InputError(f"{path.name} ends inside its POINTS")
    return Landmarks(_in_lps(values, system, path.name))
