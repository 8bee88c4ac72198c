"""The review page's glue: the inputs as volume nodes, the page's actions as the logic's steps, and
what the page shows, as plain values.

Everything the registration does goes through RSORegistrationLib's RegistrationLogic and the engine's
worker process, as in the Slicer module; this module only decides which layers the slice views show
and turns the logic's progress, history and errors into the page's text, table and plot. It uses
MRML and trame-slicer's SlicerApp (the scene, the markups logic, the slice views), never the web
server, so every action is a method that can be called and checked without a browser.

``ReviewController`` is the façade the page calls; its jobs are classes of their own: ``PairLoader``
(inputs.py: the pair as nodes), ``SliceLayers`` (layers.py: what the views show), ``PageStatus`` and
``LossPlot`` (page.py: progress, error line, metrics and loss plot).

Threads: the logic's backend collects the worker's messages on reader threads; ``process()``
handles them, and every MRML change happens, on the caller's thread (the page's event loop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rso.core.store import holds_session, input_path
from rso.errors import InputError
from RSORegistrationLib.charts import step_labels
from RSORegistrationLib.forwarding import Forwarded
from RSORegistrationLib.logic import RegistrationLogic

from .inputs import InputNodes, PairLoader, ReviewOptions, checked_geometry, given_for_new_pair
from .layers import LAYERS, SliceLayers
from .page import LossPlot, PageStatus, metric_headers, metric_rows, regions_text

__all__ = ["LAYERS", "InputNodes", "ReviewController", "ReviewOptions"]

log = logging.getLogger(__name__)


class ReviewController:
    """One pair, one registration session, the page's actions and what the page shows."""

    # What the page (and its tests) read on the controller, held by its parts.
    error = Forwarded("status")
    progress = Forwarded("status")
    progress_label = Forwarded("status")
    running_loss = Forwarded("status")
    revision = Forwarded("status")
    layer = Forwarded("layers")
    window_level = Forwarded("layers")

    def __init__(
        self,
        slicer_app,
        options: ReviewOptions,
        backend_factory: Callable | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.slicer_app, self.scene, self.options = slicer_app, slicer_app.scene, options
        self.logic = RegistrationLogic(self.scene, backend_factory, cache_dir=cache_dir)
        self.inputs: InputNodes | None = None
        self.session_folder: Path | None = Path(options.session) if options.session else None
        self.export_folder = options.out or ""
        self.loader = PairLoader(self.scene, self.logic, options.parameters)
        self.layers = SliceLayers(self.scene, self.logic, lambda: self.inputs)
        self.status = PageStatus(lambda: self.logic.busy, self.show_layers)
        self.loss_plot = LossPlot()
        self.logic.on_progress = self.status.on_progress
        self.logic.on_step = self.status.on_step
        self.logic.on_error = self.status.on_error
        self.logic.on_region_moved = self._on_region_moved
        self.logic.on_change = self.status.on_change

    # ------------------------------------------------------------------------------ inputs
    def start(self) -> None:
        """Load the pair (or reopen the session folder); bad input raises InputError, nothing is served."""
        folder = self.session_folder
        if folder is not None and folder.exists() and not folder.is_dir():
            raise InputError(f"session folder {folder} is a file")
        if folder is not None and holds_session(folder):
            if given_for_new_pair(self.options):
                raise InputError(
                    f"{folder} holds a session: leave out {'/'.join(given_for_new_pair(self.options))} "
                    "to reopen it with its own inputs"
                )
            truth = input_path(folder, "truth")
            fixed, moving = input_path(folder, "fixed"), input_path(folder, "moving")
            self._use_inputs(self.loader.read(fixed, moving, truth if truth.is_file() else None))
            self.logic.reopen(folder)
            self._set_export_folder()
        else:
            if not self.options.fixed or not self.options.moving:
                raise InputError(
                    "give --fixed and --moving images (or --session with a saved session folder)"
                )
            geometry = checked_geometry(self.options)
            self._use_inputs(
                self.loader.read(self.options.fixed, self.options.moving, self.options.truth, self.options),
                geometry,
            )
        self.logic.start_engine()  # torch loads while the user looks at the images

    def open_pair(self, fixed: str, moving: str, truth: str = "") -> None:
        """Review another pair: a new session (under the cache) once Register is pressed."""
        if self.logic.busy:
            raise InputError("a step is running: wait for it or cancel it before opening another pair")
        if not fixed or not moving:
            raise InputError("give the paths of a fixed and a moving image")
        inputs = self.loader.read(fixed, moving, truth or None)  # a bad file fails here; nothing changed yet
        self.loader.forget(self.inputs)
        self.inputs = None
        self.session_folder, self.export_folder = None, ""
        self._use_inputs(inputs)

    def _use_inputs(self, inputs: InputNodes, geometry: tuple[str, str, str] = ("", "", "")) -> None:
        """Review ``inputs``; ``geometry``: their projection geometry and placement files (a pair opened
        on the page has none)."""
        self.inputs = inputs
        self.loader.use(inputs, geometry)
        self.show_layers()
        for view in self.slicer_app.view_manager.get_slice_views():
            view.fit_view_to_content()
        self.status.changed()

    # ----------------------------------------------------------------------------- actions
    def run_action(self, action: Callable, *args) -> None:
        """Run one of the page's actions: a refusal becomes the page's error line and changes nothing."""
        self.status.error = ""
        try:
            action(*args)
        except InputError as exc:
            self.status.show_error(str(exc))
        except Exception as exc:  # a bug must not stop the page: the line says so, the log has the traceback
            log.exception("%s failed", getattr(action, "__name__", action))
            self.status.show_error(f"internal error: {type(exc).__name__}: {exc}")
        self.status.changed()

    def register(self) -> None:
        """The general model; the first time, on a new session (in the --session folder if one was named)."""
        if self.inputs is None:
            raise InputError("open a fixed and a moving image first")
        if not self.logic.can_step:
            self.session_folder = self.logic.open_session(
                folder=self.session_folder, engine=self.options.engine
            )
            self._set_export_folder()
        self.logic.general()

    def reopen(self) -> None:
        """After the engine process stopped: a new one, at the session's last accepted step."""
        if self.session_folder is None or not holds_session(self.session_folder):
            raise InputError("no saved session to reopen")
        self.logic.reopen(self.session_folder)

    def refine(self) -> None:
        """ISO: the whole image."""
        self.logic.iso()

    def draw_region(self) -> None:
        """A new box: the next two clicks in a slice view place it; placing (or moving) it starts RSO."""
        if not self.logic.can_step:
            raise InputError("register first (the general model), then draw a region to refine")
        roi = self.logic.new_region("RSO region")
        roi.GetDisplayNode().SetHandlesInteractive(True)  # drag the centre to move it, a corner to resize it
        self.slicer_app.markups_logic.place_node(roi, persistent=False)

    def undo(self) -> None:
        if not self.logic.history:
            raise InputError("nothing to undo")
        self.logic.undo()

    def cancel(self) -> None:
        """Stop placing a box, drop queued steps and interrupt the running one."""
        if self.logic.watcher.placing():
            self.slicer_app.markups_logic.disable_place_mode()
        for roi in self.logic.watcher.watched:
            if roi.GetNumberOfControlPoints() == 0:  # a box whose placement was cancelled
                self.logic.watcher.unwatch(roi)
                self.scene.RemoveNode(roi)
        self.logic.cancel()

    def export(self, folder: str = "") -> None:
        """Warped image, displacement field, difference and the report, into ``folder``."""
        if not self.logic.history:
            raise InputError("nothing to export yet: register first")
        folder = folder or self.export_folder
        if not folder:
            raise InputError("give a folder to export to")
        self.export_folder = folder
        self.logic.export(Path(folder).expanduser())

    def set_layer(self, layer: str) -> None:
        self.layers.set_layer(layer)

    def set_window_level(self, preset: str) -> None:
        self.layers.set_window_level(preset)

    def show_layers(self) -> None:
        """Set the slice views' layers for the chosen view and the image window/level."""
        self.layers.show()

    def _set_export_folder(self) -> None:
        if not self.export_folder and self.session_folder is not None:
            self.export_folder = str(self.session_folder.with_name(f"{self.session_folder.name}-export"))

    # ---------------------------------------------------------------------- logic events
    def process(self) -> bool:
        """Handle the engine's messages (call it often, e.g. 5-10 times a second); True while busy."""
        return self.logic.process()

    def _on_region_moved(self, roi) -> None:
        """A refined box was moved: refine it again where it is now."""
        self.run_action(self.logic.rso, roi)

    # ------------------------------------------------------------------------------ page
    def page_state(self) -> dict:
        """Everything the page shows, as plain values (text, numbers, lists of dicts)."""
        history = self.logic.history
        busy = self.logic.busy
        return {
            "busy": busy,
            "can_step": self.logic.can_step and not busy,
            "can_register": self.inputs is not None and not busy,
            "can_undo": bool(history) and not busy,
            "status": self.logic.status,
            "error_line": self.error,
            "can_reopen": not busy
            and not self.logic.can_step
            and self.session_folder is not None
            and holds_session(self.session_folder),
            "progress": self.progress,
            "progress_label": self.progress_label,
            "metrics_headers": metric_headers(history),
            "metrics_rows": metric_rows(history),
            "loss_svg": self.loss_plot.svg(history, self.running_loss, self.logic.last_progress),
            "layer": self.layer,
            "window_level": self.window_level,
            "session_folder": str(self.session_folder or ""),
            "export_folder": self.export_folder,
            "steps": step_labels(history),
            "regions": regions_text(self.logic.watcher.watched, self.logic.regions_done),
            "placing": self.logic.watcher.placing(),
            "inputs": dict(self.inputs.paths) if self.inputs else {"fixed": "", "moving": "", "truth": ""},
        }

    def close(self) -> None:
        self.logic.close()
