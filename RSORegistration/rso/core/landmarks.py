"""Landmarks: read them in any common format, pair them, measure the TRE of a field, write them for Slicer.

Every point here is LPS millimetres (docs/architecture.md §3); the readers (``rso.core.landmark_formats``,
whose docstring states each format's conventions) convert on the way in, the writer on the way out.

The TRE of a registration is measured as the engine's exported field is meant to be used: the field u
is an ITK displacement field (LPS mm, on the fixed image's grid) taking a fixed point x_f to its
moving point x_f + u(x_f), so TRE_i = |x_f + u(x_f) - x_m|. u is interpolated trilinearly (ITK's
linear interpolator, clamped in the outer half voxel as ITK does). A landmark beyond the field's outer
voxel boundary has no u: it is listed in ``outside`` and left out of the statistics, never counted as
zero displacement.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import lps_to_ras
from rso.core.imageio import index_to_physical_matrix, write_bytes_atomically
from rso.core.landmark_formats import (
    INSIDE_TOLERANCE,
    Landmarks,
    read_csv,
    read_dirlab,
    read_elastix_points,
    read_fcsv,
    read_markups_json,
    read_vtk_points,
)
from rso.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["Landmarks", "landmark_tre", "pair_landmarks", "read_landmarks", "write_markups_json"]

SUFFIX_READERS = {".fcsv": read_fcsv, ".csv": read_csv, ".tsv": read_csv, ".vtk": read_vtk_points}
FORMATS = ".mrk.json, .fcsv, .csv/.tsv, .vtk (legacy), elastix/transformix points, DIR-Lab .txt"
MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
# A control point's default orientation (identity in RAS) as Slicer writes it in each system.
ORIENTATION = {
    "RAS": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    "LPS": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
}
MARKUPS_DISPLAY = {
    "visibility": True,
    "opacity": 1.0,
    "color": [0.4, 1.0, 1.0],
    "selectedColor": [1.0, 0.5, 0.5],
    "activeColor": [0.4, 1.0, 0.0],
    "propertiesLabelVisibility": False,
    "pointLabelsVisibility": True,
    "textScale": 3.0,
    "glyphType": "Sphere3D",
    "glyphScale": 3.0,
    "glyphSize": 5.0,
    "useGlyphScale": True,
}


def read_landmarks(path: str | os.PathLike, image=None) -> Landmarks:
    """Landmarks from a file, the format chosen by extension, then by content for text files.

    ``image`` (a sitk.Image, a ``ModelGrid`` or an image path) is needed only by formats that hold voxel
    indices (DIR-Lab, elastix ``index``); a ``.txt`` whose lines are three numbers is DIR-Lab, read in the
    image file's slice order (``landmark_formats.read_dirlab(..., flip_z=True)`` reads reversed slices).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"landmark file not found: {path}")
    if path.name.lower().endswith(".json"):
        return read_markups_json(path)
    if path.suffix.lower() in SUFFIX_READERS:
        return SUFFIX_READERS[path.suffix.lower()](path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError:
        lines = []
    first = lines[0] if lines else ""
    if first.lower() in ("point", "index") or "OutputPoint" in first:
        return read_elastix_points(path, image)
    if len(first.replace(",", " ").split()) == 3 and _all_numbers(first.replace(",", " ").split()):
        if image is None:
            raise InputError(f"{path.name} holds DIR-Lab voxel indices: give the image they were placed on")
        return read_dirlab(path, image)
    raise InputError(f"{path.name}: unknown landmark format (read: {FORMATS})")


def _all_numbers(tokens) -> bool:
    try:
        [float(token) for token in tokens]
    except ValueError:
        return False
    return True


def pair_landmarks(fixed: Landmarks, moving: Landmarks, by: str = "order") -> tuple[Landmarks, Landmarks]:
    """The two sets in matching order: by their order in the files, or by label (the fixed set's order)."""
    if by == "order":
        if len(fixed) != len(moving):
            raise InputError(
                f"{len(fixed)} fixed landmarks but {len(moving)} moving ones: cannot pair by order"
            )
        return fixed, moving
    if by != "label":
        raise InputError(f"landmarks pair by 'order' or 'label', not {by!r}")
    for name, landmarks in (("fixed", fixed), ("moving", moving)):
        if landmarks.labels is None:
            raise InputError(f"the {name} landmarks have no labels: pair them by order")
        duplicates = sorted({label for label in landmarks.labels if landmarks.labels.count(label) > 1})
        if duplicates:
            raise InputError(f"the {name} landmarks repeat the label(s) {', '.join(duplicates[:5])}")
    missing = [label for label in fixed.labels if label not in moving.labels]
    extra = [label for label in moving.labels if label not in fixed.labels]
    if missing or extra:
        raise InputError(
            f"landmark labels do not match: missing in moving {missing[:5]}, missing in fixed {extra[:5]}"
        )
    order = [moving.labels.index(label) for label in fixed.labels]
    return fixed, Landmarks(moving.points[order], tuple(fixed.labels))


def landmark_tre(fixed_pts, moving_pts, field: sitk.Image | None = None) -> dict:
    """Target registration error of paired landmarks (N, 3) LPS mm under a fixed -> moving field.

    ``field``: an ITK displacement field (3 components, LPS mm); None gives the initial TRE. Returns mm,
    rounded to 0.001: mean, median, p95, max over the ``count`` landmarks inside the field, ``per_point``
    (None for a landmark outside) and ``outside`` (0-based indices of those landmarks).
    """
    fixed, moving = _points(fixed_pts, "fixed"), _points(moving_pts, "moving")
    if fixed.shape != moving.shape:
        raise InputError(f"{len(fixed)} fixed landmarks but {len(moving)} moving ones: pair them first")
    inside = np.ones(len(fixed), bool)
    mapped = fixed
    if field is not None:
        displacement, inside = _sample_field(field, fixed)
        mapped = fixed + displacement
    if not inside.any():
        raise InputError("no fixed landmark lies inside the displacement field")
    outside = np.flatnonzero(~inside).tolist()
    if outside:
        log.warning(
            "%d landmark(s) outside the displacement field, left out of the TRE: %s", len(outside), outside
        )
    errors = np.linalg.norm(mapped - moving, axis=1)
    measured = errors[inside]
    return {
        "mean": _mm(measured.mean()),
        "median": _mm(np.median(measured)),
        "p95": _mm(np.percentile(measured, 95)),
        "max": _mm(measured.max()),
        "count": int(inside.sum()),
        "per_point": [_mm(error) if ok else None for error, ok in zip(errors, inside)],
        "outside": outside,
    }


def _mm(value) -> float:
    return round(float(value), 3)


def _points(points, what: str) -> np.ndarray:
    if isinstance(points, Landmarks):
        return points.points
    try:
        return Landmarks(points).points
    except InputError as exc:
        raise InputError(f"{what} {exc}") from None


def _sample_field(field: sitk.Image, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear displacement (N, 3) LPS mm at LPS points (N, 3), and which points lie inside (N,).

    Reads the field through a view (no copy of a native-resolution field); equal to
    ``sitk.DisplacementFieldTransform(field).TransformPoint(p) - p`` inside the field.
    """
    if field.GetDimension() != 3 or field.GetNumberOfComponentsPerPixel() != 3:
        raise InputError("the displacement field must be 3-D with 3 components per voxel (LPS mm)")
    vectors = sitk.GetArrayViewFromImage(field)  # (z, y, x, 3)
    matrix = index_to_physical_matrix(field)
    index = (points - matrix[:3, 3]) @ np.linalg.inv(matrix[:3, :3]).T  # (N, 3) continuous (i, j, k)
    size = np.array(field.GetSize())
    inside = ((index >= -0.5 - INSIDE_TOLERANCE) & (index <= size - 0.5 + INSIDE_TOLERANCE)).all(axis=1)
    # ITK's linear interpolator uses the border voxel's value in the outer half voxel: clamp alike.
    clamped = np.clip(index, 0, size - 1)
    low = np.minimum(np.floor(clamped), np.maximum(size - 2, 0)).astype(int)
    high = np.minimum(low + 1, size - 1)
    fraction = clamped - low
    displacement = np.zeros((len(points), 3))
    for corner in itertools.product((False, True), repeat=3):
        pick = np.where(corner, high, low)
        weight = np.prod(np.where(corner, fraction, 1.0 - fraction), axis=1)
        displacement += weight[:, None] * vectors[pick[:, 2], pick[:, 1], pick[:, 0]]
    if not np.isfinite(displacement[inside]).all():
        raise InputError("the displacement field holds non-finite values at a landmark")
    return displacement, inside


def write_markups_json(
    landmarks: Landmarks, path: str | os.PathLike, errors_mm=None, coordinate_system: str = "LPS"
) -> Path:
    """Write a Slicer ``.mrk.json`` point list (opens in Slicer 4.11+), per-point errors in the descriptions.

    ``errors_mm``: one TRE (mm) per point, or None for a point that has none (outside the field).
    Points without labels are named F-1, F-2, ... as Slicer names them.
    """
    system = coordinate_system.upper()
    if system not in ORIENTATION:
        raise InputError(f"markups are written in LPS or RAS, not {coordinate_system!r}")
    if errors_mm is not None and len(errors_mm) != len(landmarks):
        raise InputError(f"{len(errors_mm)} errors for {len(landmarks)} landmarks")
    positions = lps_to_ras(landmarks.points) if system == "RAS" else landmarks.points
    labels = landmarks.labels or tuple(f"F-{n}" for n in range(1, len(landmarks) + 1))
    points = [
        {
            "id": str(n),
            "label": label,
            "description": _error_text(
                None if errors_mm is None else errors_mm[n - 1], errors_mm is not None
            ),
            "associatedNodeID": "",
            "position": [float(value) for value in position],
            "orientation": ORIENTATION[system],
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        }
        for n, (label, position) in enumerate(zip(labels, positions), start=1)
    ]
    markup = {
        "type": "Fiducial",
        "coordinateSystem": system,
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points),
        "controlPoints": points,
        "measurements": [],
        "display": MARKUPS_DISPLAY,
    }
    document = {"@schema": MARKUPS_SCHEMA, "markups": [markup]}
    return write_bytes_atomically((json.dumps(document, indent=4) + "\n").encode("utf-8"), path)


def _error_text(error, measured: bool) -> str:
    if not measured:
        return ""
    return "TRE: outside the displacement field" if error is None else f"TRE {float(error):.3f} mm"
