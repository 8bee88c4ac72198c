"""Markups ROI nodes -> region boxes on the model grid, and watching ROIs for the clinician's edits.

An ROI may be rotated (or sit under a transform). The engine's boxes are axis-aligned in
physical space, so a rotated ROI becomes the RAS axis-aligned box around its eight world
corners: the region asked for is always inside the region optimised.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import numpy as np
import slicer
import vtk

from rso.core.boxes import Box, box_from_ras
from rso.core.geometry import ModelGrid
from rso.errors import InputError

log = logging.getLogger(__name__)


def roi_corners_ras(roi) -> np.ndarray:
    """The ROI's eight corners in world RAS millimetres (its orientation and parent transforms applied)."""
    size = np.array(roi.GetSize(), float)
    if np.any(size <= 0):
        raise InputError(f"region {roi.GetName()!r} has zero size along an axis; draw a box with some depth")
    object_to_world = vtk.vtkMatrix4x4()
    # GetObjectToWorldMatrix includes the ROI's orientation, centre and any parent transform.
    object_to_world.DeepCopy(roi.GetObjectToWorldMatrix())
    corners = []
    for signs in itertools.product((-0.5, 0.5), repeat=3):
        local = [*(np.array(signs) * size), 1.0]
        corners.append(object_to_world.MultiplyPoint(local)[:3])
    return np.array(corners)


def roi_ras_box(roi) -> list[float]:
    """[R1, A1, S1, R2, A2, S2]: the RAS axis-aligned box around the (possibly oriented) ROI."""
    if roi is None or not roi.IsA("vtkMRMLMarkupsROINode"):
        raise InputError("a region must be a Markups ROI node")
    defined = slicer.vtkMRMLMarkupsNode.PositionDefined
    if roi.GetNumberOfControlPoints() == 0 or roi.GetNthControlPointPositionStatus(0) != defined:
        raise InputError(f"region {roi.GetName()!r} has not been placed yet")
    corners = roi_corners_ras(roi)
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)]).tolist()


def box_from_roi(grid: ModelGrid, roi) -> Box:
    """The model-grid voxels whose centres lie in the ROI's RAS box (the engine's voxel-centre rule)."""
    return box_from_ras(grid, roi_ras_box(roi))


def roi_from_ras_box(scene, ras_box, name: str = "region"):
    """A placed Markups ROI node spanning [R1, A1, S1, R2, A2, S2] (RAS mm), axis-aligned."""
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    low, high = np.array(ras_box[:3], float), np.array(ras_box[3:], float)
    was_modifying = roi.StartModify()
    roi.SetCenter(((low + high) / 2).tolist())
    roi.SetSize((high - low).tolist())
    roi.EndModify(was_modifying)
    return roi


def box_argument(region) -> list[float]:
    """An ROI node or a [R1, A1, S1, R2, A2, S2] list -> the RAS list the worker takes."""
    if hasattr(region, "IsA"):
        return roi_ras_box(region)
    values = [float(v) for v in region]
    if len(values) != 6:
        raise InputError(f"a region is an ROI node or 6 numbers R1,A1,S1,R2,A2,S2; got {region!r}")
    return values


class RoiWatcher:
    """Calls ``on_ready(roi)`` when an ROI is placed, released after a drag, or changed by code.

    Slicer fires point and modified events continuously while the user drags a handle; RSO must
    start only when the user lets go, and not while a new ROI is still being placed (the scene's
    interaction node is in Place mode between its clicks). Programmatic changes (console, tests)
    have no interaction around them, so they count as finished at once.
    """

    EVENTS = (
        "PointStartInteractionEvent",
        "PointEndInteractionEvent",
        "PointPositionDefinedEvent",
        "PointModifiedEvent",
        "ModifiedEvent",
        "TransformModifiedEvent",
    )

    def __init__(self, scene, on_ready: Callable[[object], None]):
        self.scene, self.on_ready = scene, on_ready
        self._observed: dict[str, tuple[object, list[int]]] = {}
        self._interacting: set[str] = set()
        self._last_box: dict[str, list[float]] = {}
        self._interaction_node, self._interaction_tag = None, None
        node = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        if node is not None:
            self._interaction_node = node
            self._interaction_tag = node.AddObserver(
                slicer.vtkMRMLInteractionNode.InteractionModeChangedEvent,
                lambda *_: self._placement_changed(),
            )

    def placing(self) -> bool:
        node = self._interaction_node
        return node is not None and node.GetCurrentInteractionMode() == slicer.vtkMRMLInteractionNode.Place

    def close(self) -> None:
        self.unwatch()
        if self._interaction_node is not None:
            self._interaction_node.RemoveObserver(self._interaction_tag)
            self._interaction_node = None

    def watch(self, roi) -> None:
        if roi.GetID() in self._observed:
            return
        tags = []
        for name in self.EVENTS:
            event = getattr(slicer.vtkMRMLMarkupsNode, name, None) or getattr(vtk.vtkCommand, name)
            # One closure per event: custom Slicer events reach Python callbacks as "NoEvent".
            tags.append(
                roi.AddObserver(event, lambda caller, _event, name=name: self._on_event(caller, name))
            )
        self._observed[roi.GetID()] = (roi, tags)

    def unwatch(self, roi=None) -> None:
        ids = [roi.GetID()] if roi is not None else list(self._observed)
        for node_id in ids:
            node, tags = self._observed.pop(node_id, (None, []))
            for tag in tags:
                node.RemoveObserver(tag)
            self._interacting.discard(node_id)
            self._last_box.pop(node_id, None)

    def watching(self, roi) -> bool:
        return roi.GetID() in self._observed

    @property
    def watched(self) -> list:
        return [node for node, _ in self._observed.values()]

    def _on_event(self, roi, name: str) -> None:
        node_id = roi.GetID()
        if name == "PointStartInteractionEvent":
            self._interacting.add(node_id)
            return
        if name == "PointEndInteractionEvent":
            self._interacting.discard(node_id)
        elif node_id in self._interacting or self.placing():
            return  # still dragging, or the second corner is not clicked yet
        self._check(roi)

    def _placement_changed(self) -> None:
        if not self.placing():
            for roi in self.watched:
                self._check(roi)

    def _check(self, roi) -> None:
        node_id = roi.GetID()
        try:
            box = roi_ras_box(roi)
        except InputError:
            return  # not placed yet, or flat while being drawn
        if self._last_box.get(node_id) == box:
            return  # display or name changes: the region itself did not move
        self._last_box[node_id] = box
        self.on_ready(roi)
