"""Loss curves and per-step metrics as Slicer table and plot nodes.

Each step with a loss curve (ISO and every RSO) is one column of the loss table and one series of
the loss chart; the metrics table has one row per accepted step. Slicer draws these nodes in its
plot and table views; outside Slicer the nodes are still real and saved with the scene.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import vtk

from rso.core.summary import summary_row

log = logging.getLogger(__name__)

SERIES_COLORS = [
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
]
METRIC_COLUMNS = {  # summary_row key -> column title
    "step": "step",
    "iterations": "iterations",
    "seconds": "seconds",
    "rmse_hu": "RMSE (HU)",
    "rmse_hu_box": "RMSE in box (HU)",
    "tre_mm": "TRE (mm)",
    "tre_mm_box": "TRE in box (mm)",
    "folding_fraction": "folding fraction",
    "outside_change_mm": "change outside box (mm)",
}


def step_labels(history: list[dict]) -> list[str]:
    """'general', 'ISO', 'RSO 1', 'RSO 2', ...: the names the clinician sees for each step."""
    labels, rso_count = [], 0
    for record in history:
        kind = record["kind"]
        if kind == "rso":
            rso_count += 1
            labels.append(f"RSO {rso_count}")
        else:
            labels.append("ISO" if kind == "iso" else kind)
    return labels


def _float_column(name: str, values) -> vtk.vtkDoubleArray:
    column = vtk.vtkDoubleArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(np.nan if value is None else float(value))
    return column


def _string_column(name: str, values) -> vtk.vtkStringArray:
    column = vtk.vtkStringArray()
    column.SetName(name)
    for value in values:
        column.InsertNextValue(str(value))
    return column


def _replace_table(table_node, columns: list) -> None:
    table = vtk.vtkTable()
    for column in columns:
        table.AddColumn(column)
    table_node.SetAndObserveTable(table)
    table_node.Modified()


def loss_series(history: list[dict]) -> list[tuple[str, list[float]]]:
    return [
        (label, list(record["loss"]))
        for label, record in zip(step_labels(history), history)
        if record.get("loss")
    ]


def update_loss_chart(scene, history: list[dict], table_node=None, chart_node=None):
    """(table, chart): one loss column and one line series per optimisation step; NaN pads shorter curves."""
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("RSO loss"))
    if chart_node is None:
        chart_node = scene.AddNewNodeByClass(
            "vtkMRMLPlotChartNode", scene.GenerateUniqueName("RSO loss chart")
        )
        chart_node.SetTitle("Loss per iteration")
        chart_node.SetXAxisTitle("iteration")
        chart_node.SetYAxisTitle("loss")
    series = loss_series(history)
    length = max((len(values) for _, values in series), default=0)
    columns = [_float_column("iteration", range(1, length + 1))]
    columns += [_float_column(label, values + [None] * (length - len(values))) for label, values in series]
    _replace_table(table_node, columns)
    _update_series(scene, chart_node, table_node, [label for label, _ in series])
    return table_node, chart_node


def _update_series(scene, chart_node, table_node, labels: list[str]) -> None:
    existing = {
        chart_node.GetNthPlotSeriesNode(i).GetName(): chart_node.GetNthPlotSeriesNode(i)
        for i in range(chart_node.GetNumberOfPlotSeriesNodes())
    }
    for name, node in existing.items():
        if name not in labels:  # an undone step's curve leaves the chart
            chart_node.RemovePlotSeriesNodeID(node.GetID())
            scene.RemoveNode(node)
    for index, label in enumerate(labels):
        series = existing.get(label)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", label)
            chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("iteration")
        series.SetYColumnName(label)
        series.SetPlotType(series.PlotTypeLine)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetColor(SERIES_COLORS[index % len(SERIES_COLORS)])


def metrics_rows(history: list[dict]) -> list[dict]:
    """summary_row (the engine's one definition of the compared numbers) for each step record dict."""
    rows = []
    for label, record in zip(step_labels(history), history):
        params = dict(record.get("params") or {})
        params.setdefault("iterations", record.get("iterations", 0))
        row = summary_row(
            SimpleNamespace(
                kind=record["kind"], params=params, seconds=record.get("seconds"), metrics=record["metrics"]
            )
        )
        row["step"] = label
        rows.append(row)
    return rows


def update_metrics_table(scene, history: list[dict], table_node=None):
    """One row per accepted step: RMSE, TRE (with a truth field), folding, change outside the box."""
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("RSO metrics"))
    rows = metrics_rows(history)
    columns = [_string_column(METRIC_COLUMNS["step"], [row["step"] for row in rows])]
    for key, title in METRIC_COLUMNS.items():
        if key != "step":
            columns.append(_float_column(title, [row.get(key) for row in rows]))
    _replace_table(table_node, columns)
    return table_node


def plot_view_node(scene, chart_node, tag: str = "RSORegistrationLoss"):
    """The module's own plot view node (a singleton tagged ``tag``), showing ``chart_node``."""
    view_node = scene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
    if view_node is None:
        view_node = scene.AddNewNodeByClass("vtkMRMLPlotViewNode")
        view_node.SetSingletonTag(tag)
    view_node.SetPlotChartNodeID(chart_node.GetID())
    return view_node
