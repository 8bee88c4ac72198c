"""What the review page shows besides the slice views, as plain values: the metrics table, the loss
plot (redrawn only as often as it is worth it), the list of boxes, the progress line and the error line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rso.core.summary import format_number
from rso.errors import InputError
from RSORegistrationLib.charts import METRIC_COLUMNS, loss_series, metrics_rows, step_labels
from RSORegistrationLib.logic import progress_text
from RSORegistrationLib.panel import progress_percent
from RSORegistrationLib.roi import roi_ras_box

from .plot import loss_svg

log = logging.getLogger(__name__)

# The metrics table's columns (keys of charts.metrics_rows): the whole image and the box.
TABLE_COLUMNS = ("step", "rmse_hu", "rmse_hu_box", "tre_mm", "tre_mm_box")
TRE_COLUMNS = ("tre_mm", "tre_mm_box")
RUNNING_PLOT_S = 1.0  # the running step's curve is redrawn at most this often


def metric_headers(history: list[dict]) -> list[dict]:
    """The table's columns; the TRE ones only when some step has a TRE (a truth was given)."""
    rows = metrics_rows(history)
    shown = [
        key
        for key in TABLE_COLUMNS
        if key not in TRE_COLUMNS or any(row.get(key) is not None for row in rows)
    ]
    return [{"title": METRIC_COLUMNS[key], "key": key} for key in shown]


def metric_rows(history: list[dict]) -> list[dict]:
    """One row per step, the numbers as text."""
    return [
        {key: (row[key] if key == "step" else format_number(row.get(key))) for key in TABLE_COLUMNS}
        for row in metrics_rows(history)
    ]


def regions_text(rois: list, regions_done: dict) -> list[str]:
    """Each placed box in RAS millimetres with its size, and whether it has been refined."""
    lines = []
    for roi in rois:
        try:
            box = roi_ras_box(roi)
        except InputError:
            continue  # not placed yet
        size = " x ".join(f"{high - low:.0f}" for low, high in zip(box[:3], box[3:]))
        state = "refined" if roi.GetID() in regions_done else "new"
        corners = ", ".join(f"{v:.0f}" for v in box)
        lines.append(f"{roi.GetName()}: {size} mm ({state}); RAS {corners}")
    return lines


class LossPlot:
    """The loss curves as SVG: the accepted steps' and the running step's, drawn again only when needed."""

    def __init__(self):
        self._key, self._svg, self._time = None, "", 0.0

    def svg(
        self, history: list[dict], running_loss: list[tuple[int, float]], last_progress: dict | None
    ) -> str:
        """Redrawn when an accepted curve changed, and at most once a second for the running one
        (drawing takes tens of milliseconds, which the engine's step on the same cores should not lose)."""
        series = loss_series(history)
        accepted = (tuple(label for label, _ in series), tuple(len(v) for _, v in series))
        key = (accepted, len(running_loss))
        only_running = self._key is not None and self._key[0] == accepted
        if key != self._key and not (only_running and time.monotonic() - self._time < RUNNING_PLOT_S):
            kind = str((last_progress or {}).get("step", ""))
            running = step_labels([*history, {"kind": kind}])[-1] if kind else ""
            self._key, self._time = key, time.monotonic()
            self._svg = loss_svg(series, (running, running_loss))
        return self._svg


class PageStatus:
    """The progress bar, the error line and the revision (changes whenever anything shown changes),
    fed by the logic's listeners.

    ``busy()``: whether the logic still has work; ``after_step()``: what the page redoes after a step.
    """

    def __init__(self, busy: Callable[[], bool], after_step: Callable[[], None]):
        self.busy, self.after_step = busy, after_step
        self.error = ""
        self.progress, self.progress_label = 0, ""
        self.running_loss: list[tuple[int, float]] = []
        self.revision = 0

    def changed(self) -> None:
        self.revision += 1

    def show_error(self, message: str) -> None:
        self.error = " ".join(message.split())  # one readable line, whatever the source wrote
        log.warning("%s", self.error)

    def _idle(self, progress: int = 0) -> None:
        self.progress, self.progress_label, self.running_loss = progress, "", []

    def on_progress(self, message: dict) -> None:
        self.progress = round(progress_percent(message))
        self.progress_label = progress_text(message)
        if message.get("loss") is not None:
            self.running_loss.append((int(message.get("iteration") or 0), float(message["loss"])))
        self.changed()

    def on_step(self, cmd: str, result: dict) -> None:
        self._idle(100 if cmd != "open" else 0)
        self.after_step()  # a new result resets the views to the overlay: keep the user's choice
        self.changed()

    def on_error(self, kind: str, message: str) -> None:
        self._idle()
        if kind == "died":  # the message holds the worker's last stderr lines: its last one says why
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            cause = f": {lines[-1]}" if len(lines) > 1 else ""
            self.show_error(f"{lines[0].rstrip(':')}{cause}; Reopen continues from the last accepted step")
        else:
            self.show_error(f"{kind} error: {message}")
        self.changed()

    def on_change(self) -> None:
        if not self.busy() and self.progress_label:  # a step ended without a result (cancelled)
            self._idle()
        self.changed()
