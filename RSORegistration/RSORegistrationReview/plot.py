"""The loss curves as an SVG for the page: one line per optimisation step, as in Slicer's loss chart.

matplotlib's object API (no pyplot: no global figure state, no display) renders a small figure to
an SVG string, which the page shows inline. The colours are the Slicer chart's (charts.SERIES_COLORS).
"""

from __future__ import annotations

import io
import re

from matplotlib import rc_context
from matplotlib.figure import Figure

from RSORegistrationLib.charts import SERIES_COLORS

FIGURE_SIZE_IN = (4.6, 2.3)


def loss_svg(
    series: list[tuple[str, list[float]]], running: tuple[str, list[tuple[int, float]]] | None = None
) -> str:
    """An inline SVG of the loss per iteration; "" when there is nothing to draw.

    ``series``: (label, loss of iterations 1..n) for each accepted step (charts.loss_series).
    ``running``: (label, [(iteration, loss), ...]) of the step in flight, drawn dashed.
    """
    if not series and not (running and running[1]):
        return ""
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=100, layout="constrained")
    axes = figure.subplots()
    for index, (label, values) in enumerate(series):
        axes.plot(
            range(1, len(values) + 1),
            values,
            color=SERIES_COLORS[index % len(SERIES_COLORS)],
            linewidth=1.4,
            label=label,
        )
    if running and running[1]:
        iterations, losses = zip(*running[1])
        axes.plot(
            iterations,
            losses,
            color=SERIES_COLORS[len(series) % len(SERIES_COLORS)],
            linewidth=1.4,
            linestyle="--",
            marker=".",
            label=f"{running[0]} (running)",
        )
    axes.set_xlabel("iteration", fontsize=8)
    axes.set_ylabel("loss", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, frameon=False)
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):  # text as text: a few kB instead of glyph outlines
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # without the XML declaration and doctype: it goes inside the page
    # Scale to the panel's width: the fixed size in points goes, the viewBox keeps the proportions.
    opening = text[: text.index(">")]
    sized = re.sub(r'\s(width|height)="[^"]*"', "", opening) + ' style="width: 100%; height: auto"'
    return sized + text[len(opening) :]
