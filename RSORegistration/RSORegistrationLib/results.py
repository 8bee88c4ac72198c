"""A step's result files -> output nodes: warped volume, difference overlay, quality maps, grid transform,
charts.

Pure functions of (scene, parameters, files, history). Results always go into the module's own
output nodes (tagged with an attribute), created on first use: the user's inputs are never
modified, except that the moving volume is placed under the output transform so that the views
show it re-warped live.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from rso.errors import InputError

from .charts import update_loss_chart, update_metrics_table
from .display import show_difference_style, show_in_slice_views, show_quality_style
from .parameters import OUTPUT_NODES, RunParameters
from .segmentations import SOURCE_ATTRIBUTE, segmentation_from_label_image, table_from_report
from .transforms import OUTPUT_ATTRIBUTE, paste_into_grid_transform, place_under, reload_transform_file
from .volumes import paste_into_volume, read_volume

log = logging.getLogger(__name__)

INPUTS_ATTRIBUTE = "RSORegistration.inputs"
QUALITY_MAPS = {"jacobian": "jacobianVolume", "folding": "foldingVolume", "change": "changeVolume"}
# The volumes a native step's patch is pasted into, by the engine's image names.
PATCHED_VOLUMES = {"warped": "warpedVolume", "difference": "differenceVolume", **QUALITY_MAPS}
QUALITY_TITLES = {"jacobian": "det J", "folding": "folding", "change": "last step change (mm)"}


def _inputs_key(params: RunParameters) -> str:
    return f"{params.fixedVolume.GetID()}|{params.movingVolume.GetID()}"


def reusable(node, params: RunParameters):
    """An output node is reused only for the same inputs; another pair gets new nodes."""
    if node is None or node.GetScene() is None or node.GetAttribute(INPUTS_ATTRIBUTE) != _inputs_key(params):
        return None
    return node


def _tag(node, role: str, params: RunParameters):
    node.SetAttribute(OUTPUT_ATTRIBUTE, role)
    node.SetAttribute(INPUTS_ATTRIBUTE, _inputs_key(params))
    return node


def forget_outputs(params: RunParameters) -> None:
    """Detach output nodes that belong to another input pair (they stay in the scene, untouched)."""
    for name in OUTPUT_NODES:
        setattr(params, name, reusable(getattr(params, name), params))


def show_step_result(
    scene, params: RunParameters, paths: dict, history: list[dict], show: bool = True
) -> RunParameters:
    """Load the current result files into the output nodes and update charts; returns the updated
    parameters."""
    forget_outputs(params)
    moving_name = params.movingVolume.GetName()
    params.warpedVolume = _tag(
        read_volume(scene, paths["warped"], f"{moving_name} warped", params.warpedVolume), "warped", params
    )
    params.differenceVolume = _tag(
        read_volume(scene, paths["difference"], f"{moving_name} difference", params.differenceVolume),
        "difference",
        params,
    )
    show_difference_style(params.differenceVolume, params.fixedVolume)
    params.outputTransform = _tag(
        reload_transform_file(
            scene, paths["displacement"], f"{moving_name} to fixed", params.outputTransform
        ),
        "transform",
        params,
    )
    place_under(params.movingVolume, params.outputTransform, replaceable=params.initialTransform)
    show_quality_maps(scene, params, paths)
    update_charts(scene, params, history)
    if show:
        show_in_slice_views(scene, params.fixedVolume, params.differenceVolume)
    return params


def paste_step_patch(scene, params: RunParameters, patch: dict, history: list[dict]) -> bool:
    """A native step's window of each image (rso.service.viewer_files) pasted into the output nodes
    already shown, and the charts updated; False when a node is missing or does not fit (the caller
    then loads the whole images)."""
    nodes = {name: reusable(getattr(params, field), params) for name, field in PATCHED_VOLUMES.items()}
    transform = reusable(params.outputTransform, params)
    if transform is None or any(node is None for node in nodes.values()):
        return False
    slices = tuple(slice(start, stop) for start, stop in patch["window"])
    for name in patch.get("clear", ()):  # the last step's change: zero beyond this step's window
        if not paste_into_volume(nodes[name], (slice(None),) * 3, 0.0):
            return False
    for name, node in nodes.items():
        if not paste_into_volume(node, slices, _voxels(patch["paths"][name])):
            return False
    if not paste_into_grid_transform(transform, slices, _voxels(patch["paths"]["displacement"])):
        return False
    update_charts(scene, params, history)
    return True


def _voxels(path: str) -> np.ndarray:
    """A patch file's voxels in numpy's (k, j, i[, c]) order."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def show_quality_maps(scene, params: RunParameters, paths: dict) -> RunParameters:
    """The quality maps the engine wrote (det J, folding, last change) as styled volumes, ready as
    foreground."""
    moving_name = params.movingVolume.GetName()
    for name, field in QUALITY_MAPS.items():
        if name in paths:
            node = read_volume(
                scene, paths[name], f"{moving_name} {QUALITY_TITLES[name]}", getattr(params, field)
            )
            setattr(params, field, _tag(node, name, params))
            show_quality_style(node, name)
    return params


def show_carried_labels(scene, params: RunParameters, source, result: dict):
    """The engine's carried labels as a segmentation on the fixed volume (refilled when carried again)."""
    nodes = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    existing = next(
        (
            node
            for node in (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))
            if node.GetAttribute(SOURCE_ATTRIBUTE) == source.GetID() and reusable(node, params)
        ),
        None,
    )
    image = sitk.ReadImage(result["paths"]["labels_warped"])
    node = segmentation_from_label_image(
        scene,
        image,
        table_from_report(result["report"]),
        f"{source.GetName()} on {params.fixedVolume.GetName()}",
        params.fixedVolume,
        existing,
    )
    node.SetAttribute(SOURCE_ATTRIBUTE, source.GetID())
    return _tag(node, "labels", params)


def show_overlay(scene, params: RunParameters, name: str) -> None:
    """Show "difference" or a quality map ("jacobian", "folding", "change") over the fixed image."""
    field = {"difference": "differenceVolume", **QUALITY_MAPS}.get(name)
    if field is None:
        raise InputError(f"overlay must be one of difference, {', '.join(QUALITY_MAPS)}; not {name!r}")
    volume = getattr(params, field)
    if volume is None:
        raise InputError(f"no {name} map yet: run a registration step first")
    show_in_slice_views(scene, params.fixedVolume, volume)


def update_charts(scene, params: RunParameters, history: list[dict]) -> RunParameters:
    table, chart = update_loss_chart(
        scene, history, reusable(params.lossTable, params), reusable(params.lossChart, params)
    )
    params.lossTable, params.lossChart = _tag(table, "loss", params), _tag(chart, "loss chart", params)
    params.metricsTable = _tag(
        update_metrics_table(scene, history, reusable(params.metricsTable, params)), "metrics", params
    )
    return params
