"""Label maps (contours): reading them, checking them, their names and their colour tables.

A label map holds whole numbers: 0 is background, every other value is one structure (a tumour,
an organ at risk, a lung). Its names and colours come from a Slicer ``.seg.nrrd`` header
(``Segment<i>_Name``/``_LabelValue``/``_Color``) or a colour-table file (``value name r g b a``,
Slicer's format). ``rso.core.labels`` is the public face of this module and of
``rso.core.label_propagation``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import overlap_fraction
from rso.core.imageio import read_file
from rso.errors import InputError

MAX_LABELS = 255  # more distinct values than this is an image, not a label map
# Distinguishable default colours (RGB 0..1) for labels that come without any.
PALETTE = (
    (0.90, 0.30, 0.25),
    (0.30, 0.60, 0.95),
    (0.35, 0.80, 0.35),
    (0.95, 0.80, 0.20),
    (0.70, 0.40, 0.85),
    (0.20, 0.80, 0.80),
    (0.95, 0.55, 0.15),
    (0.85, 0.45, 0.65),
    (0.60, 0.60, 0.60),
    (0.55, 0.35, 0.20),
)


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
def read_labels(
    path: str | os.PathLike, colors: str | os.PathLike | None = None, what: str = "label map"
) -> tuple[sitk.Image, dict[int, Label]]:
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
        raise InputError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} values per voxel (overlapping segment "
            "layers?); export the segments as one label map without overlaps"
        )
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise InputError(f"{what} has NaN or infinite voxels; a label map holds whole numbers")
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise InputError(
            f"{what} holds non-integer values (e.g. {float(fractional.flat[0]):.4g}): a label map holds "
            "whole numbers (0 = background); is this an image rather than labels?"
        )
    if values.min() < 0:
        raise InputError(
            f"{what} holds negative values (e.g. {float(values.min()):.0f}); label values are 0 or more"
        )
    present = np.unique(values)
    if len(present) - (present[0] == 0) > MAX_LABELS:
        raise InputError(
            f"{what} holds {len(present)} distinct values; a label map holds at most {MAX_LABELS} labels: "
            "is this an image rather than labels?"
        )
    pixel = (
        sitk.sitkUInt8 if present[-1] <= 255 else sitk.sitkUInt16 if present[-1] <= 65535 else sitk.sitkUInt32
    )
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
            raise InputError(
                f"colour table {path.name}, line {number}: expected 'value name r g b a', "
                f"not {line.strip()!r}"
            ) from None
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
        raise InputError(
            "the label map does not overlap the moving image in physical space; labels must be drawn "
            "on the moving image"
        )
