"""The review page: trame-slicer's slice views of the MRML scene, the actions, progress, metrics and plot.

The server renders Slicer's own slice views offscreen and streams them to the page as images; the
page sends mouse events back, so the markups ROI is placed and dragged exactly as in Slicer. The
server listens on 127.0.0.1 only (or a Unix socket): another machine reaches it through an SSH tunnel
(docs/review-app.md). Every request needs the run's token (access.py), and the Files menu opens and
writes only inside the allowed folders (files.py). trame serves its own client files, so the page
needs no internet.

One asyncio loop runs everything: trame's events, the views' rendering, and a pump that lets the
controller handle the engine worker's messages a few times a second. No other thread touches MRML.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from contextlib import contextmanager

from trame.app import TrameApp
from trame.widgets import html
from trame_server.utils.asynchronous import create_task
from trame_slicer.app.logic.slice_view_logic import connect_slice_view_slider_to_state
from trame_slicer.app.ui.slider import Slider
from trame_slicer.app.ui.view_gutter import create_vertical_view_gutter_ui
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3
from vtkmodules.vtkCommonCore import vtkCommand

from RSORegistrationLib.display import WINDOW_LEVEL_PRESETS

from .access import ReviewAccess, UnixSocket, protect
from .controller import LAYERS, ReviewController, ReviewOptions
from .files import AllowedFolders, default_folders
from .files_panel import FilesPanel

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"  # the only address the page is served on (see the module docstring)
DEFAULT_TUNNEL_PORT = 8080  # the PC's end of the tunnel suggested for a Unix socket
POLL_BUSY_S, POLL_IDLE_S = 0.1, 0.3  # how often the engine's messages are handled
ACTION_FIELDS = {"export": ("export_folder",), "open_pair": ("open_fixed", "open_moving", "open_truth")}
LAYER_TITLES = {"difference": "fixed + difference", "fixed": "fixed", "warped": "warped", "moving": "moving"}
ACTIONS = (  # (button id, label, controller method, enabled while)
    ("reopen", "Reopen session", "reopen", "can_reopen"),  # shown only then: after the engine stopped
    ("register", "Register (general)", "register", "can_register"),
    ("refine", "Refine whole image (ISO)", "refine", "can_step"),
    ("draw", "Draw region", "draw_region", "can_step"),
    ("undo", "Undo", "undo", "can_undo"),
    ("cancel", "Cancel", "cancel", "busy"),
    ("export", "Export", "export", "can_undo"),
)


class ReviewApp(TrameApp):
    """The page for one ReviewController; ``backend_factory`` and ``cache_dir`` go to the logic;
    ``access``: the token, the allowed folders and the Unix socket (default: a new token, the
    images' folders, TCP)."""

    def __init__(
        self,
        options: ReviewOptions,
        server=None,
        backend_factory: Callable | None = None,
        cache_dir=None,
        access: ReviewAccess | None = None,
    ):
        super().__init__(server=server)
        self.access = access or ReviewAccess()
        protect(self.server, self.access, self._announce)
        allowed = AllowedFolders(self.access.allow_dirs) if self.access.allow_dirs else None  # refused first
        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=slice_view_gutter)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout(
            "review",
            Layout(
                LayoutDirection.Horizontal,
                [
                    ViewLayoutDefinition.axial_view(),
                    ViewLayoutDefinition.coronal_view(),
                    ViewLayoutDefinition.sagittal_view(),
                ],
            ),
        )
        self.layout_manager.set_layout("review")
        for view in self.slicer_app.view_manager.get_slice_views():
            view.interactor().AddObserver(vtkCommand.WindowResizeEvent, self._fit_resized_view)
        self.controller = ReviewController(self.slicer_app, options, backend_factory, cache_dir)
        self.controller.start()  # bad inputs raise InputError here, before anything is served
        if allowed is None:
            allowed = AllowedFolders(
                default_folders(options.fixed, options.moving, options.truth, options.session)
            )
        self.files = FilesPanel(self.server, self.controller, allowed, self._act)
        self._shown_revision, self._shown_export = None, None
        self._pump_task: asyncio.Task | None = None
        self._set_editable_fields()
        self._sync()
        self._build_ui()
        self.state.change("layer")(self._on_layer)
        self.state.change("window_level")(self._on_window_level)
        self.ctrl.on_server_ready.add(self._on_ready)
        self.ctrl.on_server_exited.add(self._on_exited)

    # ----------------------------------------------------------------------- page <-> controller
    def _sync(self) -> None:
        """Push what the page shows, when it changed (and only then: each push is a websocket message)."""
        controller = self.controller
        if controller.revision == self._shown_revision:
            return
        self._shown_revision = controller.revision
        shown = controller.page_state()
        export_folder = shown.pop("export_folder")
        with self.state:
            self.state.update(shown)
            if export_folder != self._shown_export:  # the field is the user's to edit otherwise
                self._shown_export = self.state.export_folder = export_folder

    def _set_editable_fields(self) -> None:
        inputs = self.controller.page_state()["inputs"]
        self.state.update(
            {"open_fixed": inputs["fixed"], "open_moving": inputs["moving"], "open_truth": inputs["truth"]}
        )

    def _act(self, method: str):
        """A button's ``click``: the action, with the page fields it takes sent along with the click.
        (The server's copy of a field just typed in can lag behind: trame's client holds state
        updates back while a call is in flight, and sends the click at once.)"""
        fields = ACTION_FIELDS.get(method, ())

        def act(*values) -> None:
            values = [str(value or "") for value in values]
            checked = method in ("open_pair", "export")  # paths from the page: the allowed folders only
            self.controller.run_action(getattr(self.files if checked else self.controller, method), *values)
            if method == "open_pair" and not self.controller.error:
                self._set_editable_fields()
            self._sync()

        act.__name__ = method
        return (act, f"[{', '.join(fields)}]") if fields else act

    def _on_layer(self, layer, **_) -> None:
        if layer != self.controller.layer:
            self.controller.run_action(self.controller.set_layer, layer)
            self._sync()

    def _on_window_level(self, window_level, **_) -> None:
        if window_level != self.controller.window_level:
            self.controller.run_action(self.controller.set_window_level, window_level)
            self._sync()

    def _fit_resized_view(self, interactor, _event) -> None:
        """A view the page gave a new size shows the whole image again (the first size comes when the
        page connects). The observer finds its view through the caller: a closure holding the observed
        object can be collected by VTK's garbage collection, and the next event would crash."""
        for view in self.slicer_app.view_manager.get_slice_views():
            if view.interactor() is interactor:
                view.fit_view_to_content()

    # ----------------------------------------------------------------------------- life cycle
    def _on_ready(self, **_) -> None:
        self._pump_task = create_task(self._pump())

    def _announce(self) -> None:
        """The page's address with its token, once it can be reached (on the Unix socket: once moved)."""
        address, unix_socket = f"/?token={self.access.token}", self.access.socket
        if unix_socket is None:
            port = self.server.port
            print(
                f"Review page: http://{LOOPBACK}:{port}{address}  (this machine only; from another one "
                f"use an SSH tunnel: ssh -N -L {port}:{LOOPBACK}:{port} <this host>, then the same address)",
                flush=True,
            )
        else:
            port = self.access.tunnel_port
            print(
                f"Review page on the Unix socket {unix_socket.path} (yours only): from your PC, "
                f"ssh -N -L {port}:{unix_socket.path} <this host>, "
                f"then open http://{LOOPBACK}:{port}{address}",
                flush=True,
            )

    async def _pump(self) -> None:
        """The engine's messages, handled on the loop: progress, results into the scene, errors."""
        while True:
            busy = self.controller.process()
            self._sync()
            await asyncio.sleep(POLL_BUSY_S if busy else POLL_IDLE_S)

    def _on_exited(self, **_) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
        if self.access.socket is not None:
            self.access.socket.close()
        self.controller.close()  # the worker process shuts down with the page

    # ------------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        # The drawer (the menu icon) holds the files: another pair, the export folder, the session folder.
        with SinglePageWithDrawerLayout(
            self.server, full_height=True, show_drawer=False, width=380
        ) as self.ui:
            self.ui.title.set_text("RSO review")
            self.ui.icon.id = "btn-files"
            self.ui.drawer.temporary = True  # over the views, which keep their size
            with self.ui.drawer:
                self.files.build()
            with self.ui.toolbar:
                v3.VSpacer()
                for button_id, label, method, enabled in ACTIONS:
                    shown = {"v_if": (enabled,)} if button_id == "reopen" else {}
                    v3.VBtn(
                        label,
                        id=f"btn-{button_id}",
                        click=self._act(method),
                        disabled=(f"!{enabled}",),
                        classes="mx-1",
                        variant="tonal",
                        size="small",
                        **shown,
                    )
            with self.ui.content, html.Div(classes="d-flex flex-column", style="height: calc(100vh - 64px);"):
                with html.Div(id="views", style="height: 60%; display: flex; flex-direction: column;"):
                    self.layout_manager.initialize_layout_grid(self.ui)
                with html.Div(
                    classes="d-flex flex-row pa-2", style="height: 40%; gap: 12px; overflow: auto;"
                ):
                    self._feedback_panel()
                    with html.Div(style="flex: 1.3; min-width: 0;"):
                        v3.VDataTable(
                            headers=("metrics_headers",),
                            items=("metrics_rows",),
                            density="compact",
                            items_per_page=-1,
                            hide_default_footer=True,
                            id="metrics-table",
                        )
                    html.Div(v_html=("loss_svg",), id="loss-plot", style="flex: 1; min-width: 0;")

    def _feedback_panel(self) -> None:
        with html.Div(style="flex: 1.2; min-width: 0;"):
            v3.VProgressLinear(model_value=("progress",), height=14, color="primary", id="progress")
            html.Div("{{ progress_label }}", id="progress-label", classes="text-caption")
            html.Div("{{ status }}", id="status-line", classes="text-body-2")
            html.Div(
                "Click two opposite corners of the box in a slice view (Cancel stops).",
                v_if=("placing",),
                id="placing-hint",
                classes="text-body-2 text-primary",
            )
            v3.VAlert(
                "{{ error_line }}",
                v_if=("error_line",),
                type="error",
                density="compact",
                id="error-line",
                classes="my-1",
            )
            with html.Div(classes="d-flex flex-wrap align-center my-1", style="gap: 8px;"):
                with v3.VBtnToggle(
                    v_model=("layer",),
                    mandatory=True,
                    density="compact",
                    variant="outlined",
                    divided=True,
                    id="layer-toggle",
                ):
                    for layer in LAYERS:
                        v3.VBtn(LAYER_TITLES[layer], value=layer, id=f"layer-{layer}", size="small")
                with v3.VBtnToggle(
                    v_model=("window_level",),
                    mandatory=True,
                    density="compact",
                    variant="outlined",
                    divided=True,
                    id="window-level-toggle",
                ):
                    for preset in WINDOW_LEVEL_PRESETS:
                        v3.VBtn(preset, value=preset, id=f"wl-{preset.replace(' ', '-')}", size="small")
            html.Div(
                "{{ line }}",
                v_for="(line, index) in regions",
                key="index",
                classes="text-caption region-line",
            )


def slice_view_gutter(server, view_id: str, view) -> None:
    """The reset-view button and the slice slider, and a hidden marker the tests find the view by."""
    create_vertical_view_gutter_ui(server, view_id, view)
    with html.Div(
        classes="slice-slider-gutter",
        style="position: absolute; bottom: 0; left: 0; background-color: transparent; width: 100%;",
    ):
        Slider(
            classes="slice-slider",
            typed_state=connect_slice_view_slider_to_state(server, view),
            theme="dark",
            dense=True,
        )
    html.Div(id=f"view-marker-{view_id}", classes="view-marker", style="display: none;")


@contextmanager
def _own_arguments_only():
    """trame reads options (--host among them) from sys.argv when it starts: let it see none of them,
    so that the page is served on loopback whatever the command line held."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def serve(
    options: ReviewOptions,
    port: int,
    backend_factory: Callable | None = None,
    cache_dir=None,
    access: ReviewAccess | None = None,
) -> None:
    """Build the page (bad inputs raise InputError first) and serve it on 127.0.0.1:port, or on
    ``access.unix_socket``, until Ctrl-C."""
    access = access or ReviewAccess()
    if access.unix_socket:
        access.socket, access.tunnel_port = UnixSocket(access.unix_socket), port or DEFAULT_TUNNEL_PORT
        port = 0  # the TCP site only until the socket takes over
    try:
        app = ReviewApp(options, backend_factory=backend_factory, cache_dir=cache_dir, access=access)
        with _own_arguments_only():
            app.server.start(
                host=LOOPBACK, port=port, open_browser=False, show_connection_info=False, timeout=0
            )
    finally:
        if access.socket is not None:
            access.socket.close()
