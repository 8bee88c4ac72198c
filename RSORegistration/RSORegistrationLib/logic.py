"""The module's logic without Qt: a queue of engine requests, their results as nodes, ROI triggers.

The engine runs behind a backend (the worker process in Slicer, or in-process for tests). Requests
are queued and sent one at a time; ``process()`` drains the backend's messages without blocking:
in Slicer a QTimer calls it, in a script ``wait()`` does. Every decision lives here, so that CI
tests it on a real MRML scene.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from rso.core.paths import cache_root
from rso.core.summary import summary_text
from rso.core.store import holds_session
from rso.errors import InputError
from rso.core.boxes import box_from_ras
from rso.core.geometry import ModelGrid
from rso.service.protocol import STEP_COMMANDS
from rso.service.remote import REMOTE_RECORD

from .backends import Backend, worker_backend
from .display import style_region
from .parameters import RunParameters, parameter_node, read_parameters, write_parameters
from .results import forget_outputs, show_carried_labels, show_overlay, show_step_result, update_charts
from .roi import RoiWatcher, box_argument
from .segmentations import labels_summary, write_label_input
from .transforms import OUTPUT_ATTRIBUTE, field_from_transform_node
from .volumes import write_volume

log = logging.getLogger(__name__)


class RegistrationError(RuntimeError):
    """A step failed in the engine or the worker died; the message says which and why."""


@dataclass
class StepRequest:
    cmd: str
    args: dict = field(default_factory=dict)
    region: object = None  # the ROI node an RSO step refines, or the contours a labels request carries
    request_id: int | None = None


class RegistrationLogic:
    """general -> ISO -> RSO(region) ... on a scene, through a backend that holds the session."""

    def __init__(self, scene, backend_factory: Callable[[], Backend] | None = None, cache_dir: str | Path | None = None):
        self.scene = scene
        # The default starts a worker where the engine parameter says: here, or over SSH (docs/remote.md).
        self.backend_factory = backend_factory or (lambda: worker_backend(engine=self.parameters().engine))
        self.backend: Backend | None = None
        self._backend_engine: str | None = None  # the engine setting the backend was started with
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.history: list[dict] = []
        self.grid: ModelGrid | None = None
        self.session_open = False
        self.last_progress: dict | None = None
        self.last_error: str | None = None
        self.exported: dict | None = None
        self.labels_report: dict | None = None  # the last carried contours' report, and their segmentation
        self.carried_labels = None
        self.overlay = "difference"  # what the slice views show over the fixed volume
        self.status = ""
        self.regions_done: dict[str, list[float]] = {}  # ROI id -> the box it was refined with
        self._queue: deque[StepRequest] = deque()
        self._running: StepRequest | None = None
        self._open_job_queued = False
        # Listeners the widget sets; all optional.
        self.on_progress: Callable[[dict], None] | None = None
        self.on_step: Callable[[str, dict], None] | None = None
        self.on_error: Callable[[str, str], None] | None = None
        self.on_region_moved: Callable[[object], None] | None = None
        self.on_change: Callable[[], None] | None = None
        self.watcher = RoiWatcher(scene, self._region_ready)

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
        return self._running is not None or bool(self._queue)

    @property
    def can_step(self) -> bool:
        """Whether a step may be asked for now: a session is open (or opening)."""
        return self.session_open or self._open_job_queued

    # ------------------------------------------------------------------------------ steps
    def open_session(self, folder: str | Path | None = None, engine: dict | None = None, **changes) -> Path:
        """Write the inputs and ask the engine to start a session; returns the session folder.

        ``folder``: where the engine keeps the session (the folder the CLI and the review app name
        with ``--session``); by default a new folder under the cache. ``engine``: further arguments
        of the worker's ``open`` (precision, similarity, smoothness). ``changes``: RunParameters fields.
        """
        params = self.parameters()
        for name, value in changes.items():
            if not hasattr(params, name):
                raise InputError(f"unknown parameter {name!r}")
            setattr(params, name, value)
        params.check()
        for volume in (params.fixedVolume, params.movingVolume):
            _check_not_transformed(volume)
        staging = self.cache_dir / "sessions" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        inputs = staging / "inputs"
        session_folder = Path(folder) if folder else staging / "session"
        if holds_session(session_folder):
            raise InputError(f"{session_folder} already holds a session; reopen it instead of starting another there")
        args = {
            "fixed": str(write_volume(params.fixedVolume, inputs / "fixed.nrrd")),
            "moving": str(write_volume(params.movingVolume, inputs / "moving.nrrd")),
            "folder": str(session_folder),
            "model": params.modelPath if params.modelPath not in ("", ".") else None,
            "device": params.device,
            "seed": int(params.seed),
            "truth": self._write_truth(params.truthTransform, inputs) if params.truthTransform else None,
            "allow_non_ct": True if params.allowNonCt else None,
            "fixed_views": params.fixedViewsFile or None,
            "moving_views": params.movingViewsFile or None,
        }
        args.update(_advanced_model_args(params))
        args.update(engine or {})
        forget_outputs(params)
        params.sessionFolder = args["folder"]
        self.set_parameters(params)
        self._cancel_queue()
        if self.backend is not None and self._backend_engine not in (None, params.engine):
            self.backend.close()  # the engine setting changed: the next request starts a worker there
            self.backend = None
        self.history, self.grid, self.session_open, self.regions_done = [], None, False, {}
        self._enqueue(StepRequest("open", args))
        self._open_job_queued = True
        return session_folder

    @staticmethod
    def _write_truth(transform_node, folder: Path) -> str:
        from rso.core.imageio import write_displacement_field

        return str(write_displacement_field(field_from_transform_node(transform_node), folder / "truth.nii.gz"))

    def general(self) -> None:
        self._step(StepRequest("general"))

    def iso(self, iterations: int | None = None) -> None:
        iterations = self.parameters().isoIterations if iterations is None else int(iterations)
        self._step(StepRequest("iso", {"iterations": iterations}))

    def rso(self, region, iterations: int | None = None, mode: str | None = None, composition: str | None = None) -> None:
        """Refine inside a region: an ROI node or [R1, A1, S1, R2, A2, S2] in RAS millimetres."""
        params = self.parameters()
        box_ras = box_argument(region)
        if self.grid is not None:
            box_from_ras(self.grid, box_ras)  # an empty or outside box fails here, before the queue
        args = {"box_ras": box_ras,
                "iterations": params.rsoIterations if iterations is None else int(iterations),
                "mode": mode or params.rsoMode, "compose": composition or params.composition}
        self._step(StepRequest("rso", args, region=region if hasattr(region, "GetID") else None))

    def undo(self) -> None:
        self._step(StepRequest("undo"))

    def export(self, out: str | Path) -> None:
        """Ask the engine to write warped, displacement, difference and the report into ``out``."""
        self._step(StepRequest("export", {"out": str(out)}))

    def propagate_labels(self, source) -> None:
        """Carry contours drawn on the moving volume (a segmentation or a label-map volume) onto the fixed one.

        The engine carries them through the current field; a new segmentation on the fixed volume
        appears (the source is untouched) and ``labels_report`` lists volumes and what is out of view.
        """
        params = self.parameters()
        if not self.can_step:
            raise InputError("no registration session: register the volumes before carrying contours")
        path = Path(params.sessionFolder).parent / "labels" / f"{source.GetID() if source else 'none'}.seg.nrrd"
        self._step(StepRequest("labels", {"labels": str(write_label_input(source, params.movingVolume, path))},
                               region=source))

    def show_overlay(self, name: str) -> None:
        """Show the difference ("difference") or a quality map ("jacobian", "folding", "change") over the fixed
        volume, now and after every later step."""
        show_overlay(self.scene, self.parameters(), name)
        self.overlay = name

    def cancel(self) -> None:
        """Drop queued steps and interrupt the running one; a cancelled step changes nothing."""
        dropped = len(self._queue)
        self._queue.clear()
        if self._running is not None and self.backend is not None:
            self.backend.cancel()
            self._set_status("cancelling...")
        elif dropped:
            self._set_status(f"cancelled {dropped} queued step(s); the registration is unchanged")
        self._changed()

    def start_engine(self) -> None:
        """Start the engine's process now rather than with the first step (it imports torch for seconds)."""
        if self.backend is None:
            self.backend = self.backend_factory()

    def _step(self, job: StepRequest) -> None:
        if not self.can_step:
            raise InputError("no registration session: select the volumes and run the general model first")
        self._enqueue(job)

    def _enqueue(self, job: StepRequest) -> None:
        self._queue.append(job)
        self._changed()

    def _cancel_queue(self) -> None:
        self._queue.clear()
        if self._running is not None and self.backend is not None:
            self.backend.cancel()

    # ---------------------------------------------------------------------- message loop
    def process(self) -> bool:
        """Handle whatever the engine sent and start the next queued request; never blocks."""
        if self.backend is not None:
            for message in self.backend.poll():
                self._handle(message)
        if self._running is None and self._queue:
            self._send(self._queue.popleft())
        return self.busy

    def _send(self, job: StepRequest) -> None:
        if self.backend is None:
            self.backend, self._backend_engine = self.backend_factory(), self.parameters().engine
        job.request_id = self.backend.request(job.cmd, **job.args)
        self._running = job
        self.last_progress = None
        self._set_status(f"{job.cmd.upper() if job.cmd in ('iso', 'rso') else job.cmd}: started")

    def _handle(self, message: dict) -> None:
        event = message.get("event")
        if event == "died":
            self._died(message)
            return
        job = self._running
        if job is None or message.get("id") != job.request_id:
            log.debug("ignoring a message for another request: %s", message)
            return
        if event == "progress":
            self.last_progress = message
            self._set_status(progress_text(message))
            if self.on_progress:
                self.on_progress(message)
        elif event == "done":
            self._running = None
            self._finish(job, message.get("result") or {})
        elif event == "error":
            self._running = None
            self._fail(job, message.get("kind", "error"), message.get("message", ""))

    def _finish(self, job: StepRequest, result: dict) -> None:
        if job.cmd == "open":
            self._open_job_queued = False
            self.session_open = True
            self.grid = ModelGrid.from_dict(result["grid"]) if result.get("grid") else None
            self.history = list(result.get("history") or [])
            if result.get("paths"):  # a reopened session: show where it stood
                self._show(result["paths"])
            self._set_status(f"session open with {len(self.history)} step(s)" if self.history else "session open")
        elif job.cmd in STEP_COMMANDS or job.cmd == "undo":
            self._step_done(job, result)
        elif job.cmd == "labels":
            self.labels_report = result.get("report")
            self.carried_labels = show_carried_labels(self.scene, self.parameters(), job.region, result)
            self._set_status(labels_summary(self.labels_report))
        elif job.cmd == "export":
            self.exported = result.get("paths")
            self._set_status(f"exported to {job.args['out']}")
        if self.on_step:
            self.on_step(job.cmd, result)
        self._changed()

    def _step_done(self, job: StepRequest, result: dict) -> None:
        if "history" in result:
            self.history = list(result["history"])
        elif job.cmd == "undo":
            self.history = self.history[:-1]
        elif result.get("record"):
            self.history.append(result["record"])
        self._show(result.get("paths"))
        if job.region is not None:
            self.regions_done[job.region.GetID()] = job.args["box_ras"]
            style_region(job.region, used=True)
        if job.cmd == "undo":
            self._forget_undone_regions()
        self._set_status(step_summary(job.cmd, result.get("record"), self.history))
        if job.region is not None and job.region.GetScene() is not None and self._moved_since(job.region, job.args["box_ras"]):
            self._region_ready(job.region)  # the user moved the box while it was being refined

    @staticmethod
    def _moved_since(roi, box_ras: list[float]) -> bool:
        try:
            return box_argument(roi) != box_ras
        except InputError:
            return False  # removed or emptied meanwhile

    def _forget_undone_regions(self) -> None:
        """A region whose RSO step was undone is no longer refined: drawn as new, refined again when moved."""
        applied = [record.get("box_ras") for record in self.history if record.get("kind") == "rso"]
        for node_id, box in list(self.regions_done.items()):
            if not any(other is not None and max(abs(a - b) for a, b in zip(box, other)) < 1e-3 for other in applied):
                del self.regions_done[node_id]
                roi = self.scene.GetNodeByID(node_id)
                if roi is not None:
                    style_region(roi, used=False)

    def _show(self, paths: dict | None) -> None:
        """The current result files into the output nodes (charts only when there are no files)."""
        params = self.parameters()
        if params.fixedVolume is None or params.movingVolume is None:
            return  # the inputs left the scene meanwhile
        if paths:
            show_step_result(self.scene, params, paths, self.history)
            if self.overlay != "difference":  # the overlay the clinician chose stays on after each step
                show_overlay(self.scene, params, self.overlay)
        else:
            update_charts(self.scene, params, self.history)
        self.set_parameters(params)

    def _fail(self, job: StepRequest, kind: str, message: str) -> None:
        if kind == "busy":  # the engine still finishes a cancelled step: ask again shortly
            self._queue.appendleft(job)
            return
        self._queue.clear()  # later steps were planned on this one's result
        if job.cmd == "open":
            self._open_job_queued = False
        if kind == "cancelled":
            self._set_status(f"{job.cmd.upper()} cancelled; the registration is unchanged")
        else:
            self.last_error = f"{job.cmd} failed: {message}"
            self._set_status(self.last_error)
            if self.on_error:
                self.on_error(kind, message)
        self._changed()

    def _died(self, message: dict) -> None:
        tail = message.get("stderr") or (self.backend.stderr_tail() if self.backend is not None else "")
        self._queue.clear()
        self._running, self.session_open, self._open_job_queued = None, False, False
        self.last_error = "the engine process stopped" + (f":\n{tail}" if tail else f" ({message.get('message', '')})")
        self._set_status("the engine process stopped; use Reopen to continue from the last accepted step")
        if self.on_error:
            self.on_error("died", self.last_error)
        self._changed()

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
        if not folder or not (holds_session(folder) or (Path(folder) / REMOTE_RECORD).is_file()):
            raise InputError(f"no saved session to reopen{f' in {folder}' if folder else ''}")
        if self.backend is not None and hasattr(self.backend, "restart"):
            self.backend.restart()
        self._enqueue(StepRequest("open", {"folder": folder, "device": self.parameters().device}))
        self._open_job_queued = True

    def wait(self, timeout: float | None = None, idle: Callable[[], None] | None = None, poll_s: float = 0.05) -> list[dict]:
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
    def run(self, fixed, moving, regions=(), *, iso_iterations: int | None = None, rso_iterations: int | None = None,
            general: bool = True, blocking: bool = True, timeout: float | None = None,
            idle: Callable[[], None] | None = None, on_progress: Callable[[dict], None] | None = None,
            on_step: Callable[[str, dict], None] | None = None, **settings) -> list[dict]:
        """The paper's three steps in one call: general model, ISO, then RSO on each region.

        ``regions``: ROI nodes and/or [R1, A1, S1, R2, A2, S2] lists (RAS mm). ``settings``: any
        RunParameters field (device, seed, rsoMode, composition, modelPath, truthTransform, ...).
        Blocking returns the step records; otherwise ``process()`` must be called (Slicer's module
        logic does it with a timer) and the listeners report progress.
        """
        if on_progress is not None:
            self.on_progress = on_progress
        if on_step is not None:
            self.on_step = on_step
        changes = dict(settings, fixedVolume=fixed, movingVolume=moving)
        if iso_iterations is not None:
            changes["isoIterations"] = int(iso_iterations)
        if rso_iterations is not None:
            changes["rsoIterations"] = int(rso_iterations)
        regions = list(regions)
        for region in regions:
            box_argument(region)  # a bad region fails before anything runs
        self.open_session(**changes)
        if general:
            self.general()
        if self.parameters().isoIterations > 0:
            self.iso()
        for region in regions:
            self.rso(region)
        return self.wait(timeout, idle) if blocking else []

    # ---------------------------------------------------------------------------- regions
    def watch_region(self, roi) -> None:
        """Refine automatically when this ROI is placed or changed (if autoRefine is on)."""
        if not self.watcher.watching(roi):
            style_region(roi, used=roi.GetID() in self.regions_done)
            self.watcher.watch(roi)

    def _region_ready(self, roi) -> None:
        if not self.can_step:
            self._set_status("region drawn; run the general model first, then the region is refined")
            return
        if any(job.region is roi for job in self._queue) or (self._running and self._running.region is roi):
            return  # already queued or running on this region
        if roi.GetID() in self.regions_done:
            style_region(roi, used=False)
            if self.on_region_moved:
                self.on_region_moved(roi)
            return
        if self.parameters().autoRefine:
            try:
                self.rso(roi)
            except InputError as exc:  # raised inside a VTK observer: report it, never lose it
                self._set_status(f"rso not started: {exc}")
                if self.on_error:
                    self.on_error("input", str(exc))

    # ----------------------------------------------------------------------------- housekeeping
    def clear_cache(self) -> int:
        """Delete stored sessions (their fine-tuned weights and fields) except the open one; returns how many."""
        if self.busy:
            raise InputError("wait for the running step to finish (or cancel it) before clearing the cache")
        keep = Path(self.parameters().sessionFolder).parent if self.session_open else None
        removed = 0
        for folder in sorted((self.cache_dir / "sessions").glob("*")):
            if folder != keep and folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def reset(self) -> None:
        """Forget the scene's nodes (the scene is being closed); the engine session is dropped too."""
        self._cancel_queue()
        self._running = None  # its answer refers to nodes that no longer exist: ignored when it comes
        self.watcher.unwatch()
        self.history, self.grid, self.session_open, self.regions_done = [], None, False, {}
        self._open_job_queued = False
        self._changed()

    def close(self) -> None:
        self.watcher.close()
        self._queue.clear()
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def _set_status(self, text: str) -> None:
        self.status = text
        log.info("%s", text)

    def _changed(self) -> None:
        if self.on_change:
            self.on_change()


def _check_not_transformed(volume) -> None:
    """The engine sees a volume's own voxels: a transform the user put it under would be silently lost."""
    transform = volume.GetParentTransformNode()
    if transform is not None and not transform.GetAttribute(OUTPUT_ATTRIBUTE):
        raise InputError(f"volume {volume.GetName()!r} is under transform {transform.GetName()!r}; "
                         "harden it first (the engine registers the volume's own voxels)")


def _advanced_model_args(params: RunParameters) -> dict:
    """Untrained-network channels and model grid, for tests and tiny demos ("4,8,16,32,64", "32,64,64")."""
    args = {}
    for name, key in (("modelChannels", "channels"), ("gridShape", "grid")):
        text = getattr(params, name)
        if text:
            try:
                args[key] = [int(v) for v in text.replace(" ", "").split(",")]
            except ValueError:
                raise InputError(f"{name} must be whole numbers separated by commas, not {text!r}") from None
    return args


def progress_text(message: dict) -> str:
    step = str(message.get("step", "")).upper()
    eta = message.get("eta")
    eta_text = f", {eta:.0f} s left" if isinstance(eta, (int, float)) else ""
    return f"{step} {message.get('iteration')}/{message.get('iterations')}: loss {message.get('loss', float('nan')):.4f}{eta_text}"


def step_summary(cmd: str, record: dict | None, history: list[dict]) -> str:
    """The status line after a step: what it achieved, or why the guard declined it (nothing changed)."""
    if cmd == "undo":
        return f"undone; {len(history)} step(s) remain"
    if (record or {}).get("declined"):
        return f"RSO declined, nothing changed: {record['declined']}"
    metrics = (record or {}).get("metrics") or {}
    done = f"{cmd.upper() if cmd != 'general' else 'general model'} done"
    returned = ((record or {}).get("guard") or {}).get("returned_to")
    if returned is not None:  # native RSO returned the box to an earlier state's field, which the images prefer there
        done += f" (the box returned to the field after step {returned})" if returned else \
            " (the box returned to no registration)"
    return f"{done}, {summary_text(metrics)}" if metrics.get("rmse_hu") is not None else done
