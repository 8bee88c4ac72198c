"""The review page's glue: the inputs as volume nodes, the page's actions as the logic's steps, and
what the page shows, as plain values.

Everything the registration does goes through RSORegistrationLib's RegistrationLogic and the engine's
worker process, as in the Slicer module; this module only decides which layers the slice views show
and turns the logic's progress, history and errors into the page's text, table and plot. It uses
MRML and trame-slicer's SlicerApp (the scene, the markups logic, the slice views), never the web
server, so every action is a method that can be called and checked without a browser.

Threads: the logic's backend collects the worker's messages on reader threads; ``process()``
handles them, and every MRML change happens, on the caller's thread (the page's event loop).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rso.core.imageio import read_displacement_field, read_image
from rso.core.store import holds_session, input_path
from rso.core.summary import format_number
from rso.errors import InputError

from RSORegistrationLib.charts import METRIC_COLUMNS, loss_series, metrics_rows, step_labels
from RSORegistrationLib.display import WINDOW_LEVEL_PRESETS, apply_window_level, show_in_slice_views
from RSORegistrationLib.logic import RegistrationLogic, progress_text
from RSORegistrationLib.parameters import OUTPUT_NODES
from RSORegistrationLib.results import reusable
from RSORegistrationLib.roi import roi_ras_box
from RSORegistrationLib.transforms import transform_node_from_field
from RSORegistrationLib.volumes import volume_from_image

from .plot import loss_svg

log = logging.getLogger(__name__)

# What the slice views show: the fixed image with the difference overlay, or one image alone.
LAYERS = ("difference", "fixed", "warped", "moving")
# The metrics table's columns (keys of charts.metrics_rows): the whole image and the box.
TABLE_COLUMNS = ("step", "rmse_hu", "rmse_hu_box", "tre_mm", "tre_mm_box")
TRE_COLUMNS = ("tre_mm", "tre_mm_box")
RUNNING_PLOT_S = 1.0  # the running step's curve is redrawn at most this often


@dataclass
class ReviewOptions:
    """What ``rso-registration review`` was asked for.

    ``session``: the engine's session folder, reopened when it holds one (its own inputs are shown),
    else the folder the first Register starts the session in (default: a new one under the cache).
    ``parameters``: RunParameters fields (modelChannels, gridShape, isoIterations, rsoMode, ...);
    ``engine``: further arguments of the worker's ``open`` (precision, similarity, smoothness).
    ``fixed_views`` / ``moving_views``: the projection views files of a phase-binned 4D CBCT pair
    (rso.core.reprojection), for the pair given here only: ISO and native RSO then compare the images
    artefact-matched, and RSO may return a box to an earlier answer.
    """

    fixed: str | None = None
    moving: str | None = None
    truth: str | None = None
    fixed_views: str | None = None
    moving_views: str | None = None
    session: str | None = None
    out: str | None = None
    parameters: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)


@dataclass
class InputNodes:
    """The pair under review. ``moving_as_acquired`` shares the moving voxels but no transform:
    the moving node itself is shown through the registration's transform once there is one."""

    fixed: object
    moving: object
    moving_as_acquired: object
    truth: object = None
    paths: dict = field(default_factory=dict)

    def nodes(self) -> list:
        return [node for node in (self.fixed, self.moving, self.moving_as_acquired, self.truth) if node is not None]


class ReviewController:
    """One pair, one registration session, the page's actions and what the page shows."""

    def __init__(self, slicer_app, options: ReviewOptions, backend_factory: Callable | None = None,
                 cache_dir: str | Path | None = None):
        self.slicer_app, self.scene, self.options = slicer_app, slicer_app.scene, options
        self.logic = RegistrationLogic(self.scene, backend_factory, cache_dir=cache_dir)
        self.logic.on_progress = self._on_progress
        self.logic.on_step = self._on_step
        self.logic.on_error = self._on_error
        self.logic.on_region_moved = self._on_region_moved
        self.logic.on_change = self._on_logic_change
        self.inputs: InputNodes | None = None
        self.session_folder: Path | None = Path(options.session) if options.session else None
        self.export_folder = options.out or ""
        self.layer, self.window_level = "difference", "auto"
        self.error = ""
        self.progress, self.progress_label = 0, ""
        self.running_loss: list[tuple[int, float]] = []
        self.revision = 0  # changes whenever something the page shows changes
        self._plot_key, self._plot, self._plot_time = None, "", 0.0

    # ------------------------------------------------------------------------------ inputs
    def start(self) -> None:
        """Load the pair (or reopen the session folder); bad input raises InputError, nothing is served."""
        folder = self.session_folder
        if folder is not None and folder.exists() and not folder.is_dir():
            raise InputError(f"session folder {folder} is a file")
        if folder is not None and holds_session(folder):
            if self.options.fixed or self.options.moving:
                raise InputError(f"{folder} holds a session: leave out --fixed/--moving to reopen it with its own inputs")
            truth = input_path(folder, "truth")
            self._use_inputs(self._read_inputs(input_path(folder, "fixed"), input_path(folder, "moving"),
                                               truth if truth.is_file() else None))
            self.logic.reopen(folder)
            self._set_export_folder()
        else:
            if not self.options.fixed or not self.options.moving:
                raise InputError("give --fixed and --moving images (or --session with a saved session folder)")
            views = _checked_views(self.options.fixed_views, self.options.moving_views)
            self._use_inputs(self._read_inputs(self.options.fixed, self.options.moving, self.options.truth), views)
        self.logic.start_engine()  # torch loads while the user looks at the images

    def open_pair(self, fixed: str, moving: str, truth: str = "") -> None:
        """Review another pair: a new session (under the cache) once Register is pressed."""
        if self.logic.busy:
            raise InputError("a step is running: wait for it or cancel it before opening another pair")
        if not fixed or not moving:
            raise InputError("give the paths of a fixed and a moving image")
        inputs = self._read_inputs(fixed, moving, truth or None)  # a bad file fails here; nothing changed yet
        self._forget_pair()
        self.session_folder, self.export_folder = None, ""
        self._use_inputs(inputs)

    def _read_inputs(self, fixed, moving, truth) -> InputNodes:
        """New nodes for the images; if any file is bad, the nodes made so far are removed again."""
        made = []
        try:
            fixed_node = self._volume(fixed, "fixed image", made)
            moving_node = self._volume(moving, "moving image", made)
            as_acquired = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                       self.scene.GenerateUniqueName(f"{moving_node.GetName()} as acquired"))
            made.append(as_acquired)
            as_acquired.CopyOrientation(moving_node)
            as_acquired.SetAndObserveImageData(moving_node.GetImageData())  # the same voxels, not a copy
            as_acquired.CreateDefaultDisplayNodes()
            truth_node = None
            if truth:
                field = read_displacement_field(truth, "truth field")
                truth_node = transform_node_from_field(self.scene, field, f"{Path(truth).name} (truth)")
                made.append(truth_node)
        except Exception:
            for node in made:
                self.scene.RemoveNode(node)
            raise
        return InputNodes(fixed_node, moving_node, as_acquired, truth_node,
                          {"fixed": str(fixed), "moving": str(moving), "truth": str(truth or "")})

    def _volume(self, path, what: str, made: list):
        node = volume_from_image(self.scene, read_image(path, what), _volume_name(path))
        made.append(node)
        return node

    def _use_inputs(self, inputs: InputNodes, views: tuple[str, str] = ("", "")) -> None:
        """Review ``inputs``; ``views``: their projection views files (a pair opened on the page has none)."""
        self.inputs = inputs
        params = self.logic.parameters()
        params.fixedVolume, params.movingVolume, params.truthTransform = inputs.fixed, inputs.moving, inputs.truth
        for name, value in self.options.parameters.items():
            if not hasattr(params, name):
                raise InputError(f"unknown registration parameter {name!r}")
            setattr(params, name, value)
        params.fixedViewsFile, params.movingViewsFile = views
        params.check()
        self.logic.set_parameters(params)
        self.show_layers()
        for view in self.slicer_app.view_manager.get_slice_views():
            view.fit_view_to_content()
        self._changed()

    def _forget_pair(self) -> None:
        """Remove the reviewed pair, its results and its regions from the scene (the session stays on disk)."""
        params = self.logic.parameters()
        outputs = [reusable(getattr(params, name), params) for name in OUTPUT_NODES]
        regions = self.logic.watcher.watched
        self.logic.reset()
        for node in [*outputs, *regions, *(self.inputs.nodes() if self.inputs else [])]:
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.inputs = None

    # ----------------------------------------------------------------------------- actions
    def run_action(self, action: Callable, *args) -> None:
        """Run one of the page's actions: a refusal becomes the page's error line and changes nothing."""
        self.error = ""
        try:
            action(*args)
        except InputError as exc:
            self._show_error(str(exc))
        except Exception as exc:  # a bug must not stop the page: the line says so, the log has the traceback
            log.exception("%s failed", getattr(action, "__name__", action))
            self._show_error(f"internal error: {type(exc).__name__}: {exc}")
        self._changed()

    def register(self) -> None:
        """The general model; the first time, on a new session (in the --session folder if one was named)."""
        self._need_inputs()
        if not self.logic.can_step:
            self.session_folder = self.logic.open_session(folder=self.session_folder, engine=self.options.engine)
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
        roi = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", self.scene.GenerateUniqueName("RSO region"))
        roi.CreateDefaultDisplayNodes()
        roi.GetDisplayNode().SetHandlesInteractive(True)  # drag the centre to move it, a corner to resize it
        self.logic.watch_region(roi)
        params = self.logic.parameters()
        params.region = roi
        self.logic.set_parameters(params)
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
        if layer not in LAYERS:
            raise InputError(f"the views show one of {LAYERS}, not {layer!r}")
        self.layer = layer
        self.show_layers()

    def set_window_level(self, preset: str) -> None:
        if preset not in WINDOW_LEVEL_PRESETS:
            raise InputError(f"window/level preset must be one of {list(WINDOW_LEVEL_PRESETS)}, not {preset!r}")
        self.window_level = preset
        self.show_layers()

    def _need_inputs(self) -> None:
        if self.inputs is None:
            raise InputError("open a fixed and a moving image first")

    def _set_export_folder(self) -> None:
        if not self.export_folder and self.session_folder is not None:
            self.export_folder = str(self.session_folder.with_name(f"{self.session_folder.name}-export"))

    # ------------------------------------------------------------------------------ views
    def show_layers(self) -> None:
        """Set the slice views' layers for the chosen view and the image window/level."""
        if self.inputs is None:
            return
        params = self.logic.parameters()
        warped, difference = reusable(params.warpedVolume, params), reusable(params.differenceVolume, params)
        for volume in (self.inputs.fixed, self.inputs.moving_as_acquired, warped):
            if volume is not None:
                apply_window_level(volume, self.window_level)
        # Before the first step the warped image is the moving one and there is no difference yet.
        background = {"fixed": self.inputs.fixed, "difference": self.inputs.fixed,
                      "warped": warped or self.inputs.moving_as_acquired,
                      "moving": self.inputs.moving_as_acquired}[self.layer]
        show_in_slice_views(self.scene, background, difference if self.layer == "difference" else None)

    # ---------------------------------------------------------------------- logic events
    def process(self) -> bool:
        """Handle the engine's messages (call it often, e.g. 5-10 times a second); True while busy."""
        return self.logic.process()

    def _on_progress(self, message: dict) -> None:
        iterations = max(1, int(message.get("iterations") or 1))
        self.progress = round(100 * int(message.get("iteration") or 0) / iterations)
        self.progress_label = progress_text(message)
        if message.get("loss") is not None:
            self.running_loss.append((int(message.get("iteration") or 0), float(message["loss"])))
        self._changed()

    def _on_step(self, cmd: str, result: dict) -> None:
        self.progress, self.progress_label, self.running_loss = (100 if cmd != "open" else 0), "", []
        self.show_layers()  # a new result resets the views to the overlay: keep the user's choice
        self._changed()

    def _on_error(self, kind: str, message: str) -> None:
        self.progress, self.progress_label, self.running_loss = 0, "", []
        if kind == "died":  # the message holds the worker's last stderr lines: its last one says why
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            cause = f": {lines[-1]}" if len(lines) > 1 else ""
            self._show_error(f"{lines[0].rstrip(':')}{cause}; Reopen continues from the last accepted step")
        else:
            self._show_error(f"{kind} error: {message}")
        self._changed()

    def _on_logic_change(self) -> None:
        if not self.logic.busy and self.progress_label:  # a step ended without a result (cancelled)
            self.progress, self.progress_label, self.running_loss = 0, "", []
        self._changed()

    def _on_region_moved(self, roi) -> None:
        """A refined box was moved: refine it again where it is now."""
        self.run_action(self.logic.rso, roi)

    def _show_error(self, message: str) -> None:
        self.error = " ".join(message.split())  # one readable line, whatever the source wrote
        log.warning("%s", self.error)

    def _changed(self) -> None:
        self.revision += 1

    # ------------------------------------------------------------------------------ page
    def page_state(self) -> dict:
        """Everything the page shows, as plain values (text, numbers, lists of dicts)."""
        history = self.logic.history
        busy = self.logic.busy
        return {
            "busy": busy, "can_step": self.logic.can_step and not busy, "can_register": self.inputs is not None and not busy,
            "can_undo": bool(history) and not busy, "status": self.logic.status, "error_line": self.error,
            "can_reopen": not busy and not self.logic.can_step and self.session_folder is not None
            and holds_session(self.session_folder),
            "progress": self.progress, "progress_label": self.progress_label,
            "metrics_headers": self._metric_headers(history), "metrics_rows": self._metric_rows(history),
            "loss_svg": self._loss_plot(history), "layer": self.layer, "window_level": self.window_level,
            "session_folder": str(self.session_folder or ""), "export_folder": self.export_folder,
            "steps": step_labels(history), "regions": self._regions_text(), "placing": self.logic.watcher.placing(),
            "inputs": dict(self.inputs.paths) if self.inputs else {"fixed": "", "moving": "", "truth": ""},
        }

    @staticmethod
    def _metric_headers(history: list[dict]) -> list[dict]:
        rows = metrics_rows(history)
        shown = [key for key in TABLE_COLUMNS if key not in TRE_COLUMNS or any(row.get(key) is not None for row in rows)]
        return [{"title": METRIC_COLUMNS[key], "key": key} for key in shown]

    @staticmethod
    def _metric_rows(history: list[dict]) -> list[dict]:
        return [{key: (row[key] if key == "step" else format_number(row.get(key))) for key in TABLE_COLUMNS}
                for row in metrics_rows(history)]

    def _loss_plot(self, history: list[dict]) -> str:
        """The SVG, redrawn when an accepted curve changed, and at most once a second for the running one
        (drawing takes tens of milliseconds, which the engine's step on the same cores should not lose)."""
        accepted = tuple(label for label, _ in loss_series(history)), tuple(len(v) for _, v in loss_series(history))
        key = (accepted, len(self.running_loss))
        only_running = self._plot_key is not None and self._plot_key[0] == accepted
        if key != self._plot_key and not (only_running and time.monotonic() - self._plot_time < RUNNING_PLOT_S):
            running = self._running_label(history)
            self._plot_key, self._plot_time = key, time.monotonic()
            self._plot = loss_svg(loss_series(history), (running, self.running_loss))
        return self._plot

    def _running_label(self, history: list[dict]) -> str:
        last = self.logic.last_progress or {}
        kind = str(last.get("step", ""))
        return step_labels([*history, {"kind": kind}])[-1] if kind else ""

    def _regions_text(self) -> list[str]:
        """Each box in RAS millimetres with its size, as the page lists them."""
        lines = []
        for roi in self.logic.watcher.watched:
            try:
                box = roi_ras_box(roi)
            except InputError:
                continue  # not placed yet
            size = " x ".join(f"{high - low:.0f}" for low, high in zip(box[:3], box[3:]))
            state = "refined" if roi.GetID() in self.logic.regions_done else "new"
            corners = ", ".join(f"{v:.0f}" for v in box)
            lines.append(f"{roi.GetName()}: {size} mm ({state}); RAS {corners}")
        return lines

    def close(self) -> None:
        self.logic.close()


def _checked_views(fixed_views: str | None, moving_views: str | None) -> tuple[str, str]:
    """Both views files, read once to fail early with a one-line error, or neither ("", "")."""
    from rso.core.reprojection import read_views, views_pair

    views_pair(*(read_views(path) if path else None for path in (fixed_views, moving_views)))
    return fixed_views or "", moving_views or ""


def _volume_name(path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
