"""Label maps carried through a registration, their volumes and their overlap (``rso.core.labels``).

Each label's indicator is interpolated linearly through the field (fixed -> moving, LPS mm, on the
fixed grid), which gives its share of every fixed voxel; each voxel takes the label with the largest
share, background included, and a label the arg-max would lose keeps its largest shares. Dice and
HD95 compare carried labels with labels drawn on the fixed image; a report tells how much of each
label the fixed image sees.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rso.core.imageio import write_bytes_atomically, write_image
from rso.core.label_maps import Label, check_label_image, color_table_text, label_values, read_labels
from rso.core.quality import jacobian_map

log = logging.getLogger(__name__)

# A label is "in view" when this much of its moving-image volume lands inside the fixed image
# (the measure is good to about 1 %: interpolation and the det J sum), and "outside the field of
# view" below the second number.
IN_VIEW_FRACTION = 0.97
OUT_OF_VIEW_FRACTION = 0.01


# ------------------------------------------------------------------------------ propagation
@dataclass
class Propagation:
    """A propagated label map and, per label, how much of it the fixed image sees.

    ``expected_voxels``: the label's summed share on the fixed grid (its partial-volume size);
    ``kept``: labels that the arg-max would have lost and that kept their largest shares;
    ``seen_ml``: the moving-image volume of each label that the fixed image sees, sum(share x det J
    x voxel volume), a change of variables through the field (given det J).
    """

    image: sitk.Image
    expected_voxels: dict[int, float]
    kept: list[int]
    seen_ml: dict[int, float] | None = None


def propagate(labels: sitk.Image, field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """``labels`` (moving space) carried through ``field`` onto ``reference``'s grid.

    Args:
        labels: a label map in the moving image's space (checked with ``check_label_image``).
        field: ITK displacement field, LPS mm, fixed -> moving (e.g. ``results.native_field``).
        reference: the fixed image (its grid is the output's).
    Returns:
        The label map on ``reference``'s grid, same values, same pixel type; 0 where nothing maps.
    """
    return propagate_with_shares(labels, field, reference).image


def propagate_with_shares(
    labels: sitk.Image, field: sitk.Image, reference: sitk.Image, jacobian: sitk.Image | None = None
) -> Propagation:
    """``propagate``, also returning each label's expected size, which labels were kept from vanishing
    and, given det J of the field on ``reference``'s grid, how much of each label the fixed image sees."""
    labels = check_label_image(labels)
    det = np.clip(sitk.GetArrayViewFromImage(jacobian), 0.0, None) if jacobian is not None else None
    seen = {} if det is not None else None
    transform = sitk.DisplacementFieldTransform(
        sitk.Cast(field, sitk.sitkVectorFloat64)
    )  # casts copy the field
    shape = sitk.GetArrayViewFromImage(reference).shape
    best_share, best_value = np.zeros(shape, np.float32), np.zeros(shape, np.uint32)
    total_share = np.zeros(shape, np.float32)
    expected = {}
    for value in label_values(labels):
        share = _share(labels, value, transform, reference)
        expected[value] = float(share.sum(dtype=np.float64))
        if det is not None:
            seen[value] = float((share * det).sum(dtype=np.float64)) * voxel_volume_ml(reference)
        wins = share > best_share
        best_share[wins], best_value[wins] = share[wins], value
        total_share += share
    background = 1.0 - total_share
    result = np.where(best_share > background, best_value, 0)
    kept = [value for value in expected if expected[value] > 0 and not (result == value).any()]
    for value in kept:  # a label too small or thin for the arg-max: its largest shares, its expected size
        share = _share(labels, value, transform, reference).ravel()
        count = max(1, int(round(expected[value])))
        top = np.argsort(share)[::-1][:count]
        result.flat[top[share[top] > 0]] = value
        log.info("label %d would have vanished; kept %d voxel(s) where its share is largest", value, count)
    image = sitk.GetImageFromArray(result.astype(sitk.GetArrayViewFromImage(labels).dtype))
    image.CopyInformation(reference)
    return Propagation(image, expected, kept, seen)


def _share(labels: sitk.Image, value: int, transform, reference: sitk.Image) -> np.ndarray:
    """The label's share (0..1) of every reference voxel: its indicator, linearly interpolated."""
    indicator = sitk.Cast(sitk.Equal(labels, value), sitk.sitkFloat32)
    warped = sitk.Resample(indicator, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(warped)


# ------------------------------------------------------------------------------ measures
def voxel_volume_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def volumes_ml(image: sitk.Image, values=None) -> dict[int, float]:
    """Each label's volume in millilitres (voxel count x voxel volume)."""
    counts = np.bincount(sitk.GetArrayViewFromImage(image).ravel().astype(np.int64))
    values = label_values(image) if values is None else values
    return {int(v): float(counts[v] if v < len(counts) else 0) * voxel_volume_ml(image) for v in values}


def on_grid_of(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A label map on ``reference``'s grid: itself when the grids match, else a nearest-neighbour resample."""
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    )
    if same:
        return image
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())


def overlap(a: sitk.Image, b: sitk.Image, values=None) -> dict[int, dict]:
    """Dice and HD95 (mm) of every label of ``a`` or ``b`` (``b`` is compared on ``a``'s grid).

    HD95 is the 95th percentile of the surface distances taken both ways and pooled (medpy's
    ``hd95``): from each surface voxel of one to the nearest surface voxel of the other. It is
    None when either label is empty.

    Returns:
        {value: {"dice": 0..1, "hd95_mm": float | None, "volume_ml": [a, b]}}.
    """
    b = on_grid_of(check_label_image(b, "reference label map"), a)
    array_a, array_b = sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)
    values = sorted(set(label_values(a)) | set(label_values(b))) if values is None else values
    spacing_zyx = np.array(a.GetSpacing()[::-1])
    result = {}
    for value in values:
        in_a, in_b = _cropped_to_both(array_a == value, array_b == value)
        size = in_a.sum() + in_b.sum()
        dice = float(2.0 * np.logical_and(in_a, in_b).sum() / size) if size else 1.0
        result[int(value)] = {
            "dice": dice,
            "hd95_mm": hd95(in_a, in_b, spacing_zyx),
            "volume_ml": [float(in_a.sum()) * voxel_volume_ml(a), float(in_b.sum()) * voxel_volume_ml(a)],
        }
    return result


def hd95(a: np.ndarray, b: np.ndarray, spacing_zyx) -> float | None:
    """95th percentile of the symmetric surface distances (mm) between two masks on one grid."""
    if not a.any() or not b.any():
        return None
    surface_a, surface_b = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing_zyx)[surface_a]
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing_zyx)[surface_b]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def _cropped_to_both(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the box around their union (plus one voxel): distances stay exact, work shrinks."""
    union = np.argwhere(a | b)
    if not union.size:
        return a[:0, :0, :0], b[:0, :0, :0]
    lo, hi = np.maximum(union.min(axis=0) - 1, 0), union.max(axis=0) + 2
    box = tuple(slice(int(start), int(stop)) for start, stop in zip(lo, hi))
    return a[box], b[box]


def _surface(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels that touch the background (6-connected), or the mask itself if it is that thin."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


# ------------------------------------------------------------------------------ a propagation job
METHOD = (
    "per-label linear interpolation of the indicator through the field, arg-max with a background "
    "channel; a label that would vanish keeps its largest shares (its expected volume, at least 1 voxel)"
)


@dataclass(frozen=True)
class LabelInput:
    """Labels drawn on the moving image, their names, and optionally the same labels drawn on the fixed
    image."""

    image: sitk.Image
    table: dict[int, Label]
    reference: sitk.Image | None = None  # for Dice and HD95 of the propagated labels

    @classmethod
    def read(cls, path, colors=None, reference=None) -> LabelInput:
        image, table = read_labels(path, colors)
        reference_image = read_labels(reference, what="reference label map")[0] if reference else None
        return cls(image, table, reference_image)


def write_propagated(
    labels: LabelInput,
    field: sitk.Image,
    fixed: sitk.Image,
    out_dir: str | os.PathLike,
    jacobian: sitk.Image | None = None,
) -> tuple[dict[str, Path], dict]:
    """labels_warped.nii.gz, labels_colors.txt and labels_report.json in ``out_dir``.

    Args:
        labels: the moving image's labels (and the fixed image's, for overlap).
        field: displacement field fixed -> moving (LPS mm) on the fixed grid.
        fixed: the fixed image (the output grid).
        jacobian: det J of ``field`` (``rso.core.quality.jacobian_map``); computed when not given.
    Returns:
        The written paths and the report.
    """
    jacobian = jacobian_map(field) if jacobian is None else jacobian
    done = propagate_with_shares(labels.image, field, fixed, jacobian)
    report = propagation_report(labels, done)
    out_dir = Path(out_dir)
    paths = {
        "labels_warped": write_image(done.image, out_dir / "labels_warped.nii.gz"),
        "labels_colors": write_bytes_atomically(
            color_table_text(labels.table).encode(), out_dir / "labels_colors.txt"
        ),
    }
    paths["labels_report"] = write_bytes_atomically(
        json.dumps(report, indent=1).encode(), out_dir / "labels_report.json"
    )
    for name in report["outside_field_of_view"]:
        log.warning("label %r lies outside the fixed image's field of view", name)
    return paths, report


def propagation_report(labels: LabelInput, done: Propagation) -> dict:
    """Per label: volume before (moving) and after (fixed), how much is in view, Dice/HD95 with a
    reference."""
    before, after = volumes_ml(labels.image), volumes_ml(done.image, list(labels.table))
    overlaps = (
        overlap(done.image, labels.reference, list(labels.table)) if labels.reference is not None else {}
    )
    rows = []
    for value, label in labels.table.items():
        in_view = done.seen_ml[value] / before[value] if done.seen_ml is not None and before[value] else None
        row = {
            **label.to_dict(),
            "volume_ml_moving": before[value],
            "volume_ml_fixed": after[value],
            "in_view_fraction": None if in_view is None else min(1.0, in_view),
            "status": view_status(in_view),
            "kept_from_vanishing": value in done.kept,
        }
        if value in overlaps:
            row.update(
                dice=overlaps[value]["dice"],
                hd95_mm=overlaps[value]["hd95_mm"],
                volume_ml_reference=overlaps[value]["volume_ml"][1],
            )
        rows.append(row)
    named = lambda status: [row["name"] for row in rows if row["status"] == status]  # noqa: E731
    return {
        "method": METHOD,
        "grid": "the fixed image's",
        "labels": rows,
        "outside_field_of_view": named("outside the fixed image's field of view"),
        "partly_outside_field_of_view": named("partly outside the fixed image's field of view"),
        "kept_from_vanishing": [labels.table[v].name for v in done.kept],
    }


def view_status(in_view: float | None) -> str:
    if in_view is None:
        return "not measured"
    if in_view >= IN_VIEW_FRACTION:
        return "in view"
    if in_view < OUT_OF_VIEW_FRACTION:
        return "outside the fixed image's field of view"
    return "partly outside the fixed image's field of view"
