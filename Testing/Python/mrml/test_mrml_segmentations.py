"""Contours on slicer-core's real segmentation classes: a label map imported into a segmentation,
carried through a known field, and exported back with names, values and colours."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest_slicer import app, slicer  # noqa: F401  (fixtures)

from rso.core.labels import Label, overlap, propagate
from rso.errors import InputError
from rso.simulation.phantom import LABELS, phantom_pair
from RSORegistrationLib.segmentations import (
    EXTENT_REFERENCE_GEOMETRY,
    color_node_from_table,
    label_image_from_node,
    segmentation_from_label_image,
)
from RSORegistrationLib.volumes import array_from_volume, image_from_volume, volume_from_image

TABLE = {value: Label(value, name, color) for value, (name, color) in LABELS.items()}


def segments(node) -> list[tuple[str, tuple, int]]:
    """(name, 8-bit colour, label value) of each segment: colour tables hold 8-bit colours."""
    segmentation = node.GetSegmentation()
    return [
        (s.GetName(), eight_bit(s.GetColor()), s.GetLabelValue())
        for s in (segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments()))
    ]


def eight_bit(color) -> tuple[int, ...]:
    return tuple(int(round(255 * c)) for c in color)


def export_with_values(scene, node, table, reference):
    """Slicer's own export: each segment gets the value of the colour entry with its name."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    ids = [
        node.GetSegmentation().GetNthSegmentID(i) for i in range(node.GetSegmentation().GetNumberOfSegments())
    ]
    colors = color_node_from_table(scene, table, "export colours")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        node, ids, labelmap, reference, EXTENT_REFERENCE_GEOMETRY, colors
    )
    return labelmap


@pytest.fixture
def drawn(app):
    """The phantom's volumes and its structures as a segmentation, imported by Slicer from a label map."""
    pair = phantom_pair()
    fixed = volume_from_image(app.scene, pair.fixed, "fixed")
    moving = volume_from_image(app.scene, pair.moving, "moving")
    labelmap = volume_from_image(
        app.scene, pair.moving_labels, "drawn labels", node_class="vtkMRMLLabelMapVolumeNode"
    )
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(
        color_node_from_table(app.scene, TABLE, "drawn colours").GetID()
    )
    contours = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "contours")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, contours)
    return pair, fixed, moving, labelmap, contours


def test_a_segmentation_round_trips_through_a_known_field_with_names_and_colours(app, drawn):
    pair, fixed, moving, _, contours = drawn
    source_segments = segments(contours)
    assert [s[0] for s in source_segments] == [name for name, _ in LABELS.values()]
    image, table = label_image_from_node(contours, moving)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(pair.moving_labels)
    )
    assert {v: (t.name, eight_bit(t.color)) for v, t in table.items()} == {
        v: (name, eight_bit(color)) for v, (name, color) in LABELS.items()
    }

    carried = propagate(image, pair.truth, pair.fixed)
    result = segmentation_from_label_image(app.scene, carried, table, "contours on fixed", fixed)
    assert result is not contours and segments(result) == source_segments  # names, colours and values
    exported = export_with_values(app.scene, result, table, fixed)
    np.testing.assert_array_equal(array_from_volume(exported), sitk.GetArrayViewFromImage(carried))
    scores = overlap(image_from_volume(exported), pair.fixed_labels)  # against the analytic truth
    assert all(scores[v]["dice"] > 0.9 for v in (1, 2, 4)) and scores[3]["dice"] > 0.7, scores
    assert segments(contours) == source_segments  # the source is untouched
    again, _ = label_image_from_node(contours, moving)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(again), sitk.GetArrayViewFromImage(image))


def test_labels_out_of_view_stay_as_empty_named_segments(app, drawn):
    pair, fixed, _, _, _ = drawn
    without_nodule = sitk.ChangeLabel(pair.fixed_labels, {3: 0})
    result = segmentation_from_label_image(app.scene, without_nodule, TABLE, "partial", fixed)
    names = [s[0] for s in segments(result)]
    assert sorted(names) == sorted(name for name, _ in LABELS.values())
    nodule = result.GetSegmentation().GetSegment(result.GetSegmentation().GetSegmentIdBySegmentName("nodule"))
    assert nodule is not None and np.allclose(nodule.GetColor(), LABELS[3][1])


def test_a_label_map_volume_keeps_its_values_and_colour_names(app, drawn):
    pair, _, moving, _, _ = drawn
    array = np.zeros(sitk.GetArrayViewFromImage(pair.moving).shape, np.uint8)
    array[5:9, 20:30, 20:30], array[15:20, 30:40, 30:40] = 3, 7
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(pair.moving)
    labelmap = volume_from_image(app.scene, image, "ptv", node_class="vtkMRMLLabelMapVolumeNode")
    table = {3: Label(3, "PTV", (1.0, 0.0, 0.0)), 7: Label(7, "heart", (0.0, 1.0, 0.0))}
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(
        color_node_from_table(app.scene, table, "ptv colours").GetID()
    )
    read, names = label_image_from_node(labelmap, moving)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(read), array)
    assert names == table


def test_a_float_volume_is_refused_as_contours_and_nothing_is_added(app, drawn):
    pair, _, moving, _, _ = drawn
    float_labels = volume_from_image(
        app.scene, pair.moving, "ct as labels", node_class="vtkMRMLLabelMapVolumeNode"
    )
    nodes = app.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="segmentation or a label-map volume"):
        label_image_from_node(moving, moving)
    with pytest.raises(InputError, match="non-integer values"):
        label_image_from_node(float_labels, moving)
    assert app.scene.GetNumberOfNodes() == nodes
