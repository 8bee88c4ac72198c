"""The module's logic without Qt: engine requests from the front end's actions, their results as nodes,
ROI triggers.

The engine runs behind a backend (the worker process in Slicer, or in-process for tests). Requests
are queued and sent one at a time; ``process()`` drains the backend's messages without blocking:
in Slicer a QTimer calls it, in a script ``wait()`` does. Every decision lives in this package, so
that CI tests it on a real MRML scene. ``RegistrationLogic`` is the façade the Slicer module, the
review page and the console use; each job is a class of its own:

* ``EngineQueue`` (engine_queue.py): the backend and the queue of requests, the message loop;
* ``StepOutcomes`` and ``Feedback`` (outcomes.py): what each answer changes, the status line, listeners;
* ``StepHistory`` (history.py): the step records, the model grid, the regions refined (and undone);
* ``ResultView`` (result_view.py): the output nodes, the overlay shown, carried contours, exports;
* ``RegionTrigger`` (region_trigger.py): ROI boxes refined when placed, offered again when moved;
* session_setup.py: the inputs written for ``open``, reopening, the cache; step_requests.py: the
  arguments of RSO and contour requests; run_plan.py: ``run``'s plan (a dataclass).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from rso.core.paths import cache_root
from rso.errors import InputError

from .backends import Backend, worker_backend
from .engine_queue import EngineQueue, RegistrationError, StepRequest
from .forwarding import Forwarded
from .history import StepHistory
from .outcomes import Feedback, StepOutcomes, progress_text, step_summary
from .parameters import RunParameters, parameter_node, read_parameters, write_parameters
from .region_trigger import RegionTrigger
from .result_view import ResultView
from .results import forget_outputs
from .roi import box_argument
from .run_plan import RunPlan
from .session_setup import apply_changes, check_reopenable, clear_sessions, open_arguments
from .step_requests import labels_request, rso_request

__all__ = [
    "RegistrationError",
    "RegistrationLogic",
    "RunPlan",
    "StepRequest",
    "progress_text",
    "step_summary",
]

log = logging.getLogger(__name__)


class RegistrationLogic:
    """general -> ISO -> RSO(region) ... on a scene, through a backend that holds the session."""

    # What the front ends and the console read (and set: the listeners) on the logic, held by its parts.
    on_progress = Forwarded("feedback")
    on_step = Forwarded("feedback")
    on_error = Forwarded("feedback")
    on_region_moved = Forwarded("feedback")
    on_change = Forwarded("feedback")
    status = Forwarded("feedback")
    last_error = Forwarded("feedback")
    history = Forwarded("steps")
    grid = Forwarded("steps")
    regions_done = Forwarded("steps")
    overlay = Forwarded("view")
    labels_report = Forwarded("view")
    carried_labels = Forwarded("view")
    exported = Forwarded("view")
    backend = Forwarded("engine")
    last_progress = Forwarded("engine")
    session_open = Forwarded("engine")

    def __init__(
        self, scene, backend_factory: Callable[[], Backend] | None = None, cache_dir: str | Path | None = None
    ):
        self.scene = scene
        # The default starts a worker where the engine parameter says: here, or over SSH (docs/remote.md).
        self.backend_factory = backend_factory or (lambda: worker_backend(engine=self.parameters().engine))
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.feedback = Feedback()
        self.steps = StepHistory(scene)
        self.view = ResultView(scene)
        self.outcomes = StepOutcomes(
            self.feedback,
            self.steps,
            self.view,
            lambda roi: self.regions.ready(roi),
            lambda: self._enqueue(StepRequest("viewer")),
        )
        self.engine = EngineQueue(self.backend_factory, lambda: self.parameters().engine, self.outcomes)
        self.regions = RegionTrigger(
            scene, self.engine, self.steps, self.feedback, lambda: self.parameters().autoRefine, self.rso
        )
        self.watcher = self.regions.watcher

    # ------------------------------------------------------------------------- parameters
    @property
    def parameter_node(self):
        return parameter_node(self.scene)

    def parameters(self) -> RunParameters:
        return read_parameters(self.parameter_node)

    def set_parameters(self, params: RunParameters) -> None:
        write_parameters(self.parameter_node, params)

    @property
    def busy(self) -> bool:
        return self.engine.busy

    @property
    def can_step(self) -> bool:
        """Whether a step may be asked for now: a session is open (or opening)."""
        return self.engine.can_step

    # ------------------------------------------------------------------------------ steps
    def open_session(self, folder: str | Path | None = None, engine: dict | None = None, **changes) -> Path:
        """Write the inputs and ask the engine to start a session; returns the session folder.

        ``folder``: where the engine keeps the session (the folder the CLI and the review app name
        with ``--session``); by default a new folder under the cache. ``engine``: further arguments
        of the worker's ``open`` (precision, similarity, smoothness). ``changes``: RunParameters fields.
        """
        params = apply_changes(self.parameters(), changes)
        args = open_arguments(params, self.cache_dir, folder)
        args.update(engine or {})
        forget_outputs(params)
        params.sessionFolder = args["folder"]
        self.set_parameters(params)
        self.engine.cancel_all()
        self.engine.keep_backend_for(params.engine)
        self.steps.clear()
        self.engine.session_open = False
        self._enqueue(StepRequest("open", args))
        self.engine.open_queued = True
        return Path(args["folder"])

    def reopen(self, folder: str | Path | None = None) -> None:
        """Start a new engine process and reopen a session folder at its last accepted step.

        ``folder``: a session folder written by the CLI, the module or the review app; by default
        the one this scene's parameters name.
        """
        if folder is not None:
            params = self.parameters()
            params.sessionFolder = str(folder)
            self.set_parameters(params)
        folder = self.parameters().sessionFolder
        check_reopenable(folder)
        self.engine.restart()
        self._enqueue(StepRequest("open", {"folder": folder, "device": self.parameters().device}))
        self.engine.open_queued = True

    def general(self) -> None:
        self._step(StepRequest("general"))

    def iso(self, iterations: int | None = None) -> None:
        iterations = self.parameters().isoIterations if iterations is None else int(iterations)
        self._step(StepRequest("iso", {"iterations": iterations, "guard": bool(self.parameters().isoGuard)}))

    def rso(
        self, region, iterations: int | None = None, mode: str | None = None, composition: str | None = None
    ) -> None:
        """Refine inside a region: an ROI node or [R1, A1, S1, R2, A2, S2] in RAS millimetres."""
        self._step(rso_request(self.parameters(), self.grid, region, iterations, mode, composition))

    def undo(self) -> None:
        self._step(StepRequest("undo"))

    def export(self, out: str | Path) -> None:
        """Ask the engine to write warped, displacement, difference and the report into ``out``."""
        self._step(StepRequest("export", {"out": str(out)}))

    def propagate_labels(self, source) -> None:
        """Carry contours drawn on the moving volume (a segmentation or a label map) onto the fixed one.

        The engine carries them through the current field; a new segmentation on the fixed volume
        appears (the source is untouched) and ``labels_report`` lists volumes and what is out of view.
        """
        if not self.can_step:
            raise InputError("no registration session: register the volumes before carrying contours")
        self._step(labels_request(self.parameters(), source))

    def show_overlay(self, name: str) -> None:
        """Show the difference ("difference") or a quality map ("jacobian", "folding", "change") over
        the fixed volume, now and after every later step."""
        self.view.show_overlay(name)

    def cancel(self) -> None:
        """Drop queued steps and interrupt the running one; a cancelled step changes nothing."""
        text = self.engine.cancel()
        if text:
            self.feedback.set_status(text)
        self._changed()

    def start_engine(self) -> None:
        """Start the engine's process now rather than with the first step (it imports torch for seconds)."""
        self.engine.start()

    def _step(self, job: StepRequest) -> None:
        self.engine.step(job)
        self._changed()

    def _enqueue(self, job: StepRequest) -> None:
        self.engine.enqueue(job)
        self._changed()

    # ---------------------------------------------------------------------- message loop
    def process(self) -> bool:
        """Handle whatever the engine sent and start the next queued request; never blocks."""
        return self.engine.process()

    def wait(
        self, timeout: float | None = None, idle: Callable[[], None] | None = None, poll_s: float = 0.05
    ) -> list[dict]:
        """Block until the queue is empty; raises RegistrationError if a step failed."""
        self.last_error = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.process():
            if self.last_error:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise RegistrationError(f"timed out after {timeout:.0f} s; the running step was cancelled")
            (idle or (lambda: None))()
            time.sleep(poll_s)
        if self.last_error:
            raise RegistrationError(self.last_error)
        return list(self.history)

    # ------------------------------------------------------------------------ console API
    def run(self, fixed, moving, regions=(), **keywords) -> list[dict]:
        """The paper's three steps in one call: general model, ISO, then RSO on each region.

        ``keywords``: RunPlan's fields (iso_iterations, rso_iterations, general, blocking, timeout,
        idle, on_progress, on_step) and any RunParameters field (device, seed, rsoMode, composition,
        modelPath, truthTransform, ...). See ``run_plan``.
        """
        return self.run_plan(RunPlan.from_keywords(fixed, moving, regions, **keywords))

    def run_plan(self, plan: RunPlan) -> list[dict]:
        """Queue the plan's steps; blocking returns the step records, else [] (``process()`` drives it)."""
        if plan.on_progress is not None:
            self.on_progress = plan.on_progress
        if plan.on_step is not None:
            self.on_step = plan.on_step
        for region in plan.regions:
            box_argument(region)  # a bad region fails before anything runs
        self.open_session(**plan.changes())
        if plan.general:
            self.general()
        if self.parameters().isoIterations > 0:
            self.iso()
        for region in plan.regions:
            self.rso(region)
        return self.wait(plan.timeout, plan.idle) if plan.blocking else []

    # ---------------------------------------------------------------------------- regions
    def watch_region(self, roi) -> None:
        """Refine automatically when this ROI is placed or changed (if autoRefine is on)."""
        self.regions.watch(roi)

    def new_region(self, name: str = "RSO region"):
        """A new, not yet placed ROI node, watched and chosen as the parameters' region: the front end's
        place mode lets the clinician draw it, and placing it starts RSO."""
        roi = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", self.scene.GenerateUniqueName(name))
        roi.CreateDefaultDisplayNodes()
        self.watch_region(roi)
        params = self.parameters()
        params.region = roi
        self.set_parameters(params)
        return roi

    # ----------------------------------------------------------------------------- housekeeping
    def clear_cache(self) -> int:
        """Delete stored sessions (fine-tuned weights, fields) except the open one; returns how many."""
        if self.busy:
            raise InputError("wait for the running step to finish (or cancel it) before clearing the cache")
        keep = Path(self.parameters().sessionFolder).parent if self.session_open else None
        return clear_sessions(self.cache_dir, keep)

    def reset(self) -> None:
        """Forget the scene's nodes (the scene is being closed); the engine session is dropped too."""
        self.engine.forget()
        self.watcher.unwatch()
        self.steps.clear()
        self._changed()

    def close(self) -> None:
        self.watcher.close()
        self.engine.close()

    def listen(self, listener) -> None:
        """The module widget's callbacks: onProgress, onStepDone, onEngineError, onRegionMoved, updateGUI."""
        self.on_progress, self.on_step = listener.onProgress, listener.onStepDone
        self.on_error, self.on_region_moved = listener.onEngineError, listener.onRegionMoved
        self.on_change = listener.updateGUI

    def _changed(self) -> None:
        self.feedback.changed()
