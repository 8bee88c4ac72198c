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

This module is the public face of both halves: ``rso.core.label_maps`` (reading, checking, names
and colour tables) and ``rso.core.label_propagation`` (carrying, volumes, overlap, the report).
"""

from __future__ import annotations

from rso.core.label_maps import (
    MAX_LABELS,
    PALETTE,
    Label,
    check_label_image,
    check_labels_on,
    color_table_text,
    default_label,
    label_table,
    label_values,
    read_color_table,
    read_labels,
    segment_names,
    with_segment_names,
)
from rso.core.label_propagation import (
    IN_VIEW_FRACTION,
    METHOD,
    OUT_OF_VIEW_FRACTION,
    LabelInput,
    Propagation,
    hd95,
    on_grid_of,
    overlap,
    propagate,
    propagate_with_shares,
    propagation_report,
    view_status,
    volumes_ml,
    voxel_volume_ml,
    write_propagated,
)

__all__ = [
    "IN_VIEW_FRACTION",
    "Label",
    "LabelInput",
    "MAX_LABELS",
    "METHOD",
    "OUT_OF_VIEW_FRACTION",
    "PALETTE",
    "Propagation",
    "check_label_image",
    "check_labels_on",
    "color_table_text",
    "default_label",
    "hd95",
    "label_table",
    "label_values",
    "on_grid_of",
    "overlap",
    "propagate",
    "propagate_with_shares",
    "propagation_report",
    "read_color_table",
    "read_labels",
    "segment_names",
    "view_status",
    "volumes_ml",
    "voxel_volume_ml",
    "with_segment_names",
    "write_propagated",
]
