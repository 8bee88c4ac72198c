"""Segmentations and label-map volumes <-> the engine's label images, with names, values and colours.

A clinician's contours live in a vtkMRMLSegmentationNode (or a label-map volume). The engine
carries a label map (``rso.core.labels``); this module turns the source node into one on the
moving volume's grid and the carried label map back into a *new* segmentation on the fixed volume,
through Slicer's own Segmentations logic, so that segment names and colours survive. The source
node is never modified.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from rso.core.imageio import write_image
from rso.core.labels import Label, check_label_image, default_label, label_table, with_segment_names
from rso.errors import InputError

from .transforms import OUTPUT_ATTRIBUTE
from .volumes import array_from_volume, geometry_image, image_from_volume, volume_from_image

log = logging.getLogger(__name__)

SOURCE_ATTRIBUTE = "RSORegistration.labelsSource"  # on a carried segmentation: the ID of its source node
EXTENT_REFERENCE_GEOMETRY = 1  # vtkSegmentation::EXTENT_REFERENCE_GEOMETRY


def label_image_from_node(node, moving_volume) -> tuple[sitk.Image, dict[int, Label]]:
    """A segmentation (rasterised on the moving volume's grid) or a label-map volume as label image + names.

    Segments keep their label values when those are distinct and positive (a segmentation
    imported from a label map has them), else they are numbered 1..N in segment order.
    """
    if node is None:
        raise InputError("select a segmentation or a label-map volume to carry")
    if node.IsA("vtkMRMLSegmentationNode"):
        return _from_segmentation(node, moving_volume)
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        return _from_label_map_volume(node)
    raise InputError(
        f"{node.GetName()!r} is a {node.GetClassName()}; contours come as a segmentation or a "
        "label-map volume"
    )


def _from_label_map_volume(node) -> tuple[sitk.Image, dict[int, Label]]:
    _check_untransformed(node)
    image = check_label_image(image_from_volume(node), f"label map {node.GetName()!r}")
    colors = node.GetDisplayNode().GetColorNode() if node.GetDisplayNode() is not None else None
    named = {}
    for value in label_table(image):
        if colors is not None and value < colors.GetNumberOfColors() and colors.GetColorName(value):
            rgba = [0.0] * 4
            colors.GetColor(value, rgba)
            named[value] = Label(value, colors.GetColorName(value), tuple(rgba[:3]))
    return image, label_table(image, named)


def _from_segmentation(node, moving_volume) -> tuple[sitk.Image, dict[int, Label]]:
    """Each segment exported on the moving grid by Slicer's logic; later segments win where they overlap."""
    _check_untransformed(node)
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not ids:
        raise InputError(f"segmentation {node.GetName()!r} has no segments")
    values = [segmentation.GetSegment(i).GetLabelValue() for i in ids]
    if len(set(values)) != len(values) or min(values) < 1:
        values = list(range(1, len(ids) + 1))
    scene = node.GetScene()
    # The moving volume may sit under the registration's transform: export on its own grid instead.
    reference = volume_from_image(scene, geometry_image(moving_volume), "RSO moving grid")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "RSO segment export")
    try:
        combined = np.zeros(sitk.GetArrayViewFromImage(geometry_image(moving_volume)).shape, np.uint16)
        table = {}
        for segment_id, value in zip(ids, values):
            segment = segmentation.GetSegment(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                node, [segment_id], labelmap, reference, EXTENT_REFERENCE_GEOMETRY
            ):
                raise InputError(
                    f"segment {segment.GetName()!r} could not be exported on the moving volume's grid"
                )
            combined[array_from_volume(labelmap) > 0] = value
            table[value] = Label(value, segment.GetName(), tuple(segment.GetColor()))
    finally:
        for temporary in (labelmap, reference):
            scene.RemoveNode(temporary)
    image = sitk.GetImageFromArray(combined)
    image.CopyInformation(geometry_image(moving_volume))
    return check_label_image(image), table


def _check_untransformed(node) -> None:
    transform = node.GetParentTransformNode()
    if transform is not None and not transform.GetAttribute(OUTPUT_ATTRIBUTE):
        raise InputError(f"{node.GetName()!r} is under transform {transform.GetName()!r}; harden it first")


def color_node_from_table(scene, table: dict[int, Label], name: str):
    """A colour table node whose entry ``value`` has the label's name and colour (others unnamed, black)."""
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(name))
    colors.SetTypeToUser()
    colors.SetNumberOfColors(max(table, default=0) + 1)
    colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value, label in table.items():
        colors.SetColor(value, label.name, *label.color, 1.0)
    return colors


def segmentation_from_label_image(
    scene, image: sitk.Image, table: dict[int, Label], name: str, fixed_volume, node=None
):
    """A segmentation on the fixed volume holding each label as a named, coloured segment.

    Labels of ``table`` that the image does not hold (e.g. outside the field of view) become empty
    segments, so that every name the clinician drew is there. ``node``: a segmentation to refill.
    """
    table = {
        value: table.get(value) or default_label(value)
        for value in sorted(set(table) | set(label_table(image)))
    }
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
        node.CreateDefaultDisplayNodes()
    node.GetSegmentation().RemoveAllSegments()
    node.SetReferenceImageGeometryParameterFromVolumeNode(fixed_volume)
    labelmap = volume_from_image(scene, image, "RSO carried labels", node_class="vtkMRMLLabelMapVolumeNode")
    colors = color_node_from_table(scene, table, "RSO label colours")
    try:
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node):
            raise InputError(f"the carried labels could not be imported into segmentation {name!r}")
    finally:
        for temporary in (labelmap, colors):
            scene.RemoveNode(temporary)
    segmentation = node.GetSegmentation()
    present = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    for label in table.values():
        if label.name not in present:
            segmentation.AddEmptySegment("", label.name, list(label.color))
    return node


def write_label_input(node, moving_volume, path: str | Path) -> Path:
    """The node's labels as a .seg.nrrd (names, values and colours in its header) for the engine."""
    image, table = label_image_from_node(node, moving_volume)
    return write_image(with_segment_names(image, table), path)


def table_from_report(report: dict) -> dict[int, Label]:
    """The labels as the engine's labels report lists them."""
    return {row["value"]: Label(row["value"], row["name"], tuple(row["color"])) for row in report["labels"]}


def labels_summary(report: dict) -> str:
    """One line for the status bar: how many labels, and which are (partly) out of view or were kept."""
    parts = [f"{len(report['labels'])} label(s) carried onto the fixed volume"]
    for key, text in (
        ("outside_field_of_view", "outside the field of view"),
        ("partly_outside_field_of_view", "partly outside"),
        ("kept_from_vanishing", "kept from vanishing"),
    ):
        if report.get(key):
            parts.append(f"{text}: {', '.join(report[key])}")
    return "; ".join(parts)
