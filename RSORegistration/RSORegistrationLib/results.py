"""A step's result files -> output nodes: warped volume, difference overlay, grid transform, charts.

Pure functions of (scene, parameters, files, history). Results always go into the module's own
output nodes (tagged with an attribute), created on first use: the user's inputs are never
modified, except that the moving volume is placed under the output transform so that the views
show it re-warped live.
"""

from __future__ import annotations

import logging

from .charts import update_loss_chart, update_metrics_table
from .display import show_difference_style, show_in_slice_views
from .parameters import RunParameters
from .transforms import OUTPUT_ATTRIBUTE, place_under, read_transform_file
from .volumes import read_volume

log = logging.getLogger(__name__)

INPUTS_ATTRIBUTE = "RSORegistration.inputs"


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
    for name in ("warpedVolume", "differenceVolume", "outputTransform", "lossTable", "lossChart", "metricsTable"):
        setattr(params, name, reusable(getattr(params, name), params))


def show_step_result(scene, params: RunParameters, paths: dict, history: list[dict], show: bool = True) -> RunParameters:
    """Load the current result files into the output nodes and update charts; returns the updated parameters."""
    forget_outputs(params)
    moving_name = params.movingVolume.GetName()
    params.warpedVolume = _tag(read_volume(scene, paths["warped"], f"{moving_name} warped", params.warpedVolume),
                               "warped", params)
    params.differenceVolume = _tag(read_volume(scene, paths["difference"], f"{moving_name} difference",
                                               params.differenceVolume), "difference", params)
    show_difference_style(params.differenceVolume)
    params.outputTransform = _tag(read_transform_file(scene, paths["displacement"], f"{moving_name} to fixed",
                                                      params.outputTransform), "transform", params)
    place_under(params.movingVolume, params.outputTransform)
    update_charts(scene, params, history)
    if show:
        show_in_slice_views(scene, params.fixedVolume, params.differenceVolume)
    return params


def update_charts(scene, params: RunParameters, history: list[dict]) -> RunParameters:
    table, chart = update_loss_chart(scene, history, reusable(params.lossTable, params), reusable(params.lossChart, params))
    params.lossTable, params.lossChart = _tag(table, "loss", params), _tag(chart, "loss chart", params)
    params.metricsTable = _tag(update_metrics_table(scene, history, reusable(params.metricsTable, params)),
                               "metrics", params)
    return params
