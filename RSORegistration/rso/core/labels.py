"""Label maps (contours) carried through a registration, their volumes and their overlap.

A label map holds whole numbers: 0 is background, every other value is one structure (a tumour,
an organ at risk, a lung). Its names and colours come from a Slicer ``.seg.nrrd`` header
(``Segment<i>_Name``/``_LabelValue``/``_Color``) or a colour-table file (``value name r g b a``,
Slicer's format). Labels are drawn on the moving image; the registration's displacement field
(fixed -> moving, LPS mm, on the fixed grid) carries them onto the fixed image's grid.

Why not a nearest-neighbour resample: it snaps each fixed voxel to one moving voxel, so thin or
small structures break up or disappear where the grids do not line up. Here each label's
indicator is interpolated linearly through the field, which gives the label's share of every
fixed voxel (0..1); each voxel takes the label with the largest share, background included
(background's share is what the labels leave). A label that would still vanish although part
of it is in view keeps the voxels where its share is largest, as many as its expected volume
(at least one), so that a small nodule is never silently lost.
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

from rso.core.geometry import overlap_fraction
from rso.core.imageio import read_file, write_bytes_atomically, write_image
from rso.core.quality import jacobian_map
from rso.errors import InputError

log = logging.getLogger(__name__)

MAX_LABELS = 255  # more distinct values than this is an image, not a label map
# A label is "in view" when this much of its moving-image volume lands inside the fixed image
# (the measure is good to about 1 %: interpolation and the det J sum), and "outside the field of
# view" below the second number.
IN_VIEW_FRACTION = 0.97
OUT_OF_VIEW_FRACTION = 0.01
# Distinguishable default colours (RGB 0..1) for labels that come without any.
PALETTE = ((0.90, 0.30, 0.25), (0.30, 0.60, 0.95), (0.35, 0.80, 0.35), (0.95, 0.80, 0.20), (0.70, 0.40, 0.85),
           (0.20, 0.80, 0.80), (0.95, 0.55, 0.15), (0.85, 0.45, 0.65), (0.60, 0.60, 0.60), (0.55, 0.35, 0.20))


@dataclass(frozen=True)
class Label:
    """One structure of a label map: its value, name and display colour (RGB, 0..1)."""

    value: int
    name: str
    color: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"value": self.value, "name": self.name, "color": [round(c, 4) for c in self.color]}


def default_label(value: int) -> Label:
    return Label(int(value), f"label {value}", PALETTE[(int(value) - 1) % len(PALETTE)])


# ------------------------------------------------------------------------------ reading
def read_labels(path: str | os.PathLike, colors: str | os.PathLike | None = None,
                what: str = "label map") -> tuple[sitk.Image, dict[int, Label]]:
    """A label map file (NIfTI, NRRD, .seg.nrrd) and the names of its labels.

    Names and colours come from ``colors`` (a colour-table file) if given, else from the file's
    own segment metadata (.seg.nrrd), else they are "label <value>". Returns the checked label
    image (unsigned integer voxels) and {value: Label} for every value present except 0.
    """
    path = Path(path)
    image = read_file(path, what)
    named = read_color_table(colors) if colors else segment_names(image)  # before the cast drops the header
    image = check_label_image(image, f"{what} {path.name}")
    return image, label_table(image, named)


def check_label_image(image: sitk.Image, what: str = "label map") -> sitk.Image:
    """The image as unsigned whole-number labels, or InputError naming why it is not a label map.

    A floating-point file is accepted only when every value is a whole number (many tools save
    masks as float); a CT or any other intensity image is refused.
    """
    if image.GetDimension() != 3:
        raise InputError(f"{what} is {image.GetDimension()}-D; a 3-D label map is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} has {image.GetNumberOfComponentsPerPixel()} values per voxel (overlapping segment "
                         "layers?); export the segments as one label map without overlaps")
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise InputError(f"{what} has NaN or infinite voxels; a label map holds whole numbers")
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise InputError(f"{what} holds non-integer values (e.g. {float(fractional.flat[0]):.4g}): a label map holds "
                         "whole numbers (0 = background); is this an image rather than labels?")
    if values.min() < 0:
        raise InputError(f"{what} holds negative values (e.g. {float(values.min()):.0f}); label values are 0 or more")
    present = np.unique(values)
    if len(present) - (present[0] == 0) > MAX_LABELS:
        raise InputError(f"{what} holds {len(present)} distinct values; a label map holds at most {MAX_LABELS} labels: "
                         "is this an image rather than labels?")
    pixel = sitk.sitkUInt8 if present[-1] <= 255 else sitk.sitkUInt16 if present[-1] <= 65535 else sitk.sitkUInt32
    return sitk.Cast(image, pixel)


def label_values(image: sitk.Image) -> list[int]:
    """The labels present (0, the background, excluded), in increasing order."""
    return [int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v != 0]


def label_table(image: sitk.Image, named: dict[int, Label] | None = None) -> dict[int, Label]:
    """{value: Label} for every label present; values missing from ``named`` get default names."""
    named = named or {}
    return {value: named.get(value) or default_label(value) for value in label_values(image)}


def segment_names(image: sitk.Image) -> dict[int, Label]:
    """Names, values and colours that Slicer writes into a .seg.nrrd header (one layer)."""
    keys = set(image.GetMetaDataKeys())
    table = {}
    index = 0
    while f"Segment{index}_Name" in keys:
        prefix = f"Segment{index}_"
        value = int(image.GetMetaData(prefix + "LabelValue")) if prefix + "LabelValue" in keys else index + 1
        color = default_label(value).color
        if prefix + "Color" in keys:
            color = tuple(float(c) for c in image.GetMetaData(prefix + "Color").split()[:3])
        table[value] = Label(value, image.GetMetaData(prefix + "Name"), color)
        index += 1
    return table


def read_color_table(path: str | os.PathLike) -> dict[int, Label]:
    """A colour-table file: one ``value name r g b [a]`` line per label (0..255 colours), '#' comments."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"colour table not found: {path}")
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            value, name, rgb = int(fields[0]), fields[1], [float(v) / 255.0 for v in fields[2:5]]
        except (ValueError, IndexError):
            raise InputError(f"colour table {path.name}, line {number}: expected 'value name r g b a', "
                             f"not {line.strip()!r}") from None
        if len(rgb) != 3:
            raise InputError(f"colour table {path.name}, line {number}: expected 'value name r g b a'")
        table[value] = Label(value, name, tuple(rgb))
    return table


def color_table_text(table: dict[int, Label]) -> str:
    """``table`` in the colour-table file format (Slicer reads it as a colour node)."""
    lines = ["# value name r g b a (rso-registration label colours)"]
    for label in table.values():
        rgb = " ".join(str(int(round(255 * c))) for c in label.color)
        lines.append(f"{label.value} {label.name.replace(' ', '_')} {rgb} 255")
    return "\n".join(lines) + "\n"


def with_segment_names(image: sitk.Image, table: dict[int, Label]) -> sitk.Image:
    """A copy of ``image`` whose header names its labels as a .seg.nrrd does (``segment_names`` reads it)."""
    named = sitk.Image(image)
    for index, label in enumerate(table.values()):
        named.SetMetaData(f"Segment{index}_Name", label.name)
        named.SetMetaData(f"Segment{index}_LabelValue", str(label.value))
        named.SetMetaData(f"Segment{index}_Color", " ".join(f"{c:.6g}" for c in label.color))
    return named


def check_labels_on(labels: sitk.Image, moving: sitk.Image) -> None:
    """The label map must lie in the moving image's space (any grid; a cropped .seg.nrrd is fine)."""
    if overlap_fraction(moving, labels) <= 0.0:
        raise InputError("the label map does not overlap the moving image in physical space; labels must be drawn "
                         "on the moving image")


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


def propagate_with_shares(labels: sitk.Image, field: sitk.Image, reference: sitk.Image,
                          jacobian: sitk.Image | None = None) -> Propagation:
    """``propagate``, also returning each label's expected size, which labels were kept from vanishing
    and, given det J of the field on ``reference``'s grid, how much of each label the fixed image sees."""
    labels = check_label_image(labels)
    det = np.clip(sitk.GetArrayViewFromImage(jacobian), 0.0, None) if jacobian is not None else None
    seen = {} if det is not None else None
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))  # casts copy the field
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
    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6))
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
        result[int(value)] = {"dice": dice, "hd95_mm": hd95(in_a, in_b, spacing_zyx),
                              "volume_ml": [float(in_a.sum()) * voxel_volume_ml(a), float(in_b.sum()) * voxel_volume_ml(a)]}
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
    box = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    return a[box], b[box]


def _surface(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels that touch the background (6-connected), or the mask itself if it is that thin."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


# ------------------------------------------------------------------------------ a propagation job
METHOD = ("per-label linear interpolation of the indicator through the field, arg-max with a background "
          "channel; a label that would vanish keeps its largest shares (its expected volume, at least 1 voxel)")


@dataclass(frozen=True)
class LabelInput:
    """Labels drawn on the moving image, their names, and optionally the same labels drawn on the fixed image."""

    image: sitk.Image
    table: dict[int, Label]
    reference: sitk.Image | None = None  # for Dice and HD95 of the propagated labels

    @classmethod
    def read(cls, path, colors=None, reference=None) -> "LabelInput":
        image, table = read_labels(path, colors)
        reference_image = read_labels(reference, what="reference label map")[0] if reference else None
        return cls(image, table, reference_image)


def write_propagated(labels: LabelInput, field: sitk.Image, fixed: sitk.Image, out_dir: str | os.PathLike,
                     jacobian: sitk.Image | None = None) -> tuple[dict[str, Path], dict]:
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
    paths = {"labels_warped": write_image(done.image, out_dir / "labels_warped.nii.gz"),
             "labels_colors": write_bytes_atomically(color_table_text(labels.table).encode(),
                                                     out_dir / "labels_colors.txt")}
    paths["labels_report"] = write_bytes_atomically(json.dumps(report, indent=1).encode(), out_dir / "labels_report.json")
    for name in report["outside_field_of_view"]:
        log.warning("label %r lies outside the fixed image's field of view", name)
    return paths, report


def propagation_report(labels: LabelInput, done: Propagation) -> dict:
    """Per label: volume before (moving) and after (fixed), how much is in view, Dice/HD95 with a reference."""
    before, after = volumes_ml(labels.image), volumes_ml(done.image, list(labels.table))
    overlaps = overlap(done.image, labels.reference, list(labels.table)) if labels.reference is not None else {}
    rows = []
    for value, label in labels.table.items():
        in_view = done.seen_ml[value] / before[value] if done.seen_ml is not None and before[value] else None
        row = {**label.to_dict(), "volume_ml_moving": before[value], "volume_ml_fixed": after[value],
               "in_view_fraction": None if in_view is None else min(1.0, in_view), "status": view_status(in_view),
               "kept_from_vanishing": value in done.kept}
        if value in overlaps:
            row.update(dice=overlaps[value]["dice"], hd95_mm=overlaps[value]["hd95_mm"],
                       volume_ml_reference=overlaps[value]["volume_ml"][1])
        rows.append(row)
    named = lambda status: [row["name"] for row in rows if row["status"] == status]  # noqa: E731
    return {"method": METHOD, "grid": "the fixed image's", "labels": rows,
            "outside_field_of_view": named("outside the fixed image's field of view"),
            "partly_outside_field_of_view": named("partly outside the fixed image's field of view"),
            "kept_from_vanishing": [labels.table[v].name for v in done.kept]}


def view_status(in_view: float | None) -> str:
    if in_view is None:
        return "not measured"
    if in_view >= IN_VIEW_FRACTION:
        return "in view"
    if in_view < OUT_OF_VIEW_FRACTION:
        return "outside the fixed image's field of view"
    return "partly outside the fixed image's field of view"
