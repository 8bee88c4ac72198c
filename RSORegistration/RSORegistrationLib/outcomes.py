"""What each answer of the engine changes: the history, the scene's result nodes, the status line, and
the listeners a front end set (the Slicer module's widget, the review page's controller).

``EngineQueue`` reports every answer here (``EngineEvents``); nothing here sends requests, except
that a region moved while it was being refined is handed back to the logic to refine again, and
that a native step's window that cannot be pasted (an output node was deleted) asks for the whole
images (``need_whole``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rso.core.summary import summary_text
from rso.service.protocol import STEP_COMMANDS

from .engine_queue import StepRequest
from .history import StepHistory, moved_since
from .result_view import ResultView
from .segmentations import labels_summary

log = logging.getLogger(__name__)


class Feedback:
    """The status line, the last error and the listeners a front end sets (all optional).

    ``on_progress(message)``, ``on_step(cmd, result)``, ``on_error(kind, message)``,
    ``on_region_moved(roi)`` (a refined region was moved) and ``on_change()`` (anything shown changed).
    """

    def __init__(self):
        self.status = ""
        self.last_error: str | None = None
        self.on_progress: Callable[[dict], None] | None = None
        self.on_step: Callable[[str, dict], None] | None = None
        self.on_error: Callable[[str, str], None] | None = None
        self.on_region_moved: Callable[[object], None] | None = None
        self.on_change: Callable[[], None] | None = None

    def set_status(self, text: str) -> None:
        self.status = text
        log.info("%s", text)

    def changed(self) -> None:
        if self.on_change:
            self.on_change()

    def error(self, kind: str, message: str) -> None:
        if self.on_error:
            self.on_error(kind, message)


class StepOutcomes:
    """Turns the engine's answers into the history, the scene and the status line (an EngineEvents).

    ``region_ready(roi)``: the logic's trigger for a region placed or moved, called again when the
    user moved a box while it was being refined. ``need_whole()``: the logic's request for the whole
    viewer images.
    """

    def __init__(
        self,
        feedback: Feedback,
        steps: StepHistory,
        view: ResultView,
        region_ready: Callable[[object], None],
        need_whole: Callable[[], None] = lambda: None,
    ):
        self.feedback, self.steps, self.view, self.region_ready = feedback, steps, view, region_ready
        self.need_whole = need_whole

    def started(self, job: StepRequest) -> None:
        self.feedback.set_status(f"{job.cmd.upper() if job.cmd in ('iso', 'rso') else job.cmd}: started")

    def progress(self, job: StepRequest, message: dict) -> None:
        self.feedback.set_status(progress_text(message))
        if self.feedback.on_progress:
            self.feedback.on_progress(message)

    def done(self, job: StepRequest, result: dict) -> None:
        if job.cmd == "open":
            self._opened(result)
        elif job.cmd in STEP_COMMANDS or job.cmd == "undo":
            self._step_done(job, result)
        elif job.cmd == "viewer":
            self.view.show(result.get("paths"), self.steps.history)
        elif job.cmd == "labels":
            self.view.show_labels(job.region, result)
            self.feedback.set_status(labels_summary(self.view.labels_report))
        elif job.cmd == "export":
            self.view.exported = result.get("paths")
            self.feedback.set_status(f"exported to {job.args['out']}")
        if self.feedback.on_step:
            self.feedback.on_step(job.cmd, result)
        self.feedback.changed()

    def _opened(self, result: dict) -> None:
        self.steps.opened(result)
        history = self.steps.history
        if result.get("paths"):  # a reopened session: show where it stood
            self.view.show(result["paths"], history)
        opened = f"session open with {len(history)} step(s)" if history else "session open"
        matching = result.get("artefact_matching")
        self.feedback.set_status(f"{opened}; {matching}" if matching else opened)

    def _step_done(self, job: StepRequest, result: dict) -> None:
        self.steps.record(job, result)
        if result.get("patch") and not self.view.paste(result["patch"], self.steps.history):
            self.need_whole()
        else:
            self.view.show(result.get("paths"), self.steps.history)
        self.steps.mark_regions(job)
        status = step_summary(job.cmd, result.get("record"), self.steps.history)
        band = self.view.band_news()
        if band is not None:  # said once: the overlay hides the pair's noise from now on
            status += (
                f"; the overlay leaves differences within {band:.0f} HU black (the images' noise and streaks)"
            )
        self.feedback.set_status(status)
        region = job.region
        if region is not None and region.GetScene() is not None and moved_since(region, job.args["box_ras"]):
            self.region_ready(region)  # the user moved the box while it was being refined

    def failed(self, job: StepRequest, kind: str, message: str) -> None:
        if kind == "cancelled":
            self.feedback.set_status(f"{job.cmd.upper()} cancelled; the registration is unchanged")
        else:
            self.feedback.last_error = f"{job.cmd} failed: {message}"
            self.feedback.set_status(self.feedback.last_error)
            self.feedback.error(kind, message)
        self.feedback.changed()

    def died(self, message: dict, stderr_tail: str) -> None:
        self.feedback.last_error = "the engine process stopped" + (
            f":\n{stderr_tail}" if stderr_tail else f" ({message.get('message', '')})"
        )
        self.feedback.set_status(
            "the engine process stopped; use Reopen to continue from the last accepted step"
        )
        self.feedback.error("died", self.feedback.last_error)
        self.feedback.changed()


def progress_text(message: dict) -> str:
    """The status line of a progress message: "ISO 3/100: loss 0.1234, 12 s left"."""
    step = str(message.get("step", "")).upper()
    eta = message.get("eta")
    eta_text = f", {eta:.0f} s left" if isinstance(eta, (int, float)) else ""
    loss = message.get("loss", float("nan"))
    return f"{step} {message.get('iteration')}/{message.get('iterations')}: loss {loss:.4f}{eta_text}"


def step_summary(cmd: str, record: dict | None, history: list[dict]) -> str:
    """The status line after a step: what it achieved, or why the guard declined it (nothing changed)."""
    if cmd == "undo":
        return f"undone; {len(history)} step(s) remain"
    if (record or {}).get("declined"):
        return f"RSO declined, nothing changed: {record['declined']}"
    metrics = (record or {}).get("metrics") or {}
    done = f"{cmd.upper() if cmd != 'general' else 'general model'} done"
    returned = ((record or {}).get("guard") or {}).get("returned_to")
    if (
        returned is not None
    ):  # native RSO returned the box to an earlier state's field, which the images prefer
        done += (
            f" (the box returned to the field after step {returned})"
            if returned
            else " (the box returned to no registration)"
        )
    params = (record or {}).get("params") or {}
    if params.get("kept") == "start" and "why" in params:  # ISO's guard on TV phases: it did not fit
        done += f" (its field was not kept: {params['why']})"
    elif params.get("kept") == "start" and "given_gain" in params:  # ISO's guard on the matched pair
        gain = params["given_gain"]
        done += f" (its field was not kept: the images as given preferred it too little, {gain:+.1%})"
    elif params.get("kept") == "start":  # ISO's guard without geometry: the change lay across the body's axis
        share = params["axis_share"]
        done += (
            f" (its field was not kept: it moved the lungs mostly across the body's axis, {share:.0%} of the "
            "change along it, as a fit to CBCT streaks does)"
        )
    if params.get("unguarded"):  # ISO without projection geometry, where nothing could judge its field
        done += (
            f" (unguarded: {params['unguarded']}; on phase-binned CBCT phases without their geometry files "
            "set ISO iterations to 0)"
        )
    return f"{done}, {summary_text(metrics)}" if metrics.get("rmse_hu") is not None else done
