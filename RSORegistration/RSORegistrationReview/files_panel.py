"""The page's Files menu (the drawer): another pair, the export folder, the session folder, and a
browser of the allowed folders (files.py) that fills the fields.

Every path from the page is checked against the allowed folders before the controller opens or
writes anything: the fields are text the user can change, and the browser's clicks come back from
the page as text too.
"""

from __future__ import annotations

from collections.abc import Callable

from trame.widgets import html
from trame_vuetify.widgets import vuetify3 as v3

from rso.errors import InputError

from .files import AllowedFolders

FIELDS = (("fixed", "fixed image"), ("moving", "moving image"), ("truth", "truth field (optional)"))
TARGETS = ("fixed", "moving", "truth", "export")  # the field a click in the browser fills
DRAWER = "main_drawer"  # the state of the page layout's drawer (trame-vuetify's, template "main")


class FilesPanel:
    """The drawer's widgets and their actions. ``act(method)``: the ``click`` of the page's button for
    the action ``method`` (open_pair, export), which runs it through the controller's error line."""

    def __init__(self, server, controller, allowed: AllowedFolders, act: Callable):
        self.state, self.controller, self.allowed, self.act = server.state, controller, allowed, act
        self.state.update({"files_target": "fixed", "files_roots": [str(root) for root in allowed.roots]})
        self._show(allowed.roots[0])
        server.state.change(DRAWER)(self._on_drawer)

    # ------------------------------------------------------------------------- checked actions
    def open_pair(self, fixed: str, moving: str, truth: str = "") -> None:
        """The controller's open_pair, on the paths resolved inside the allowed folders only."""
        if not fixed or not moving:
            raise InputError("give the paths of a fixed and a moving image")
        self.controller.open_pair(
            str(self.allowed.inside(fixed, "fixed image")),
            str(self.allowed.inside(moving, "moving image")),
            str(self.allowed.inside(truth, "truth field")) if truth else "",
        )

    def export(self, folder: str = "") -> None:
        """The controller's export: to the folder it proposes (--out, or beside the session), or to one
        inside the allowed folders."""
        if folder and folder != self.controller.export_folder:
            folder = str(self.allowed.inside(folder, "export folder"))
        self.controller.export(folder)

    # --------------------------------------------------------------------------------- browser
    def browse(self, folder: str) -> None:
        self.controller.run_action(self._show, folder)

    def up(self) -> None:
        def show_parent() -> None:
            parent = self.allowed.parent(self.state.files_folder)
            if parent is not None:
                self._show(parent)

        self.controller.run_action(show_parent)

    def choose(self, path: str, folder: bool) -> None:
        """A click on an entry: a folder opens, a file fills the chosen field."""
        self.controller.run_action(self._show if folder else self._fill, path)

    def use_folder(self) -> None:
        """The shown folder fills the chosen field (a DICOM series folder, or the export folder)."""
        self.controller.run_action(self._fill, self.state.files_folder)

    def _on_drawer(self, **state) -> None:
        """The menu opened: list the shown folder again (files come and go), or the first allowed one."""
        if not state.get(DRAWER):
            return
        try:
            self._show(self.state.files_folder)
        except InputError:  # the folder went away meanwhile
            self._show(self.allowed.roots[0])

    def _show(self, folder) -> None:
        entries = self.allowed.listing(folder)  # refuses a folder outside: nothing changes then
        resolved = self.allowed.inside(folder, "folder")
        self.state.update(
            {
                "files_folder": str(resolved),
                "files_entries": [entry.to_dict() for entry in entries],
                "files_top": self.allowed.parent(resolved) is None,
            }
        )

    def _fill(self, path: str) -> None:
        target = self.state.files_target
        field = "export_folder" if target == "export" else f"open_{target}"
        self.state[field] = str(self.allowed.inside(path))

    # -------------------------------------------------------------------------------------- UI
    def build(self) -> None:
        with html.Div(classes="d-flex flex-column pa-3", id="files"):
            for name, label in FIELDS:
                v3.VTextField(
                    v_model=(f"open_{name}",),
                    label=f"{label}, path on the server",
                    density="compact",
                    hide_details=True,
                    id=f"input-{name}",
                    classes="mb-1",
                )
            v3.VBtn(
                "Open pair",
                id="btn-open",
                click=self.act("open_pair"),
                disabled=("busy",),
                size="small",
                variant="tonal",
                classes="mb-2",
            )
            v3.VTextField(
                v_model=("export_folder",),
                label="export to folder",
                density="compact",
                hide_details=True,
                id="export-folder",
                classes="mb-1",
            )
            html.Div(
                "session folder: {{ session_folder || 'starts with the first Register' }}",
                id="session-line",
                classes="text-caption mb-2",
            )
            self._browser()

    def _browser(self) -> None:
        v3.VDivider(classes="mb-2")
        html.Div("Browse (a click fills the field chosen here)", classes="text-caption")
        with v3.VBtnToggle(
            v_model=("files_target",), mandatory=True, density="compact", divided=True, id="files-target"
        ):
            for target in TARGETS:
                v3.VBtn(target, value=target, id=f"files-target-{target}", size="small")
        with html.Div(classes="d-flex flex-wrap my-1", style="gap: 4px;", v_if=("files_roots.length > 1",)):
            v3.VChip(
                "{{ root }}",
                v_for="root in files_roots",
                key="root",
                size="small",
                click=(self.browse, "[root]"),
            )
        with html.Div(classes="d-flex align-center my-1", style="gap: 4px;"):
            v3.VBtn(
                "Up", id="files-up", click=self.up, disabled=("files_top",), size="small", variant="tonal"
            )
            v3.VBtn("Use folder", id="files-use-folder", click=self.use_folder, size="small", variant="tonal")
        html.Div(
            "{{ files_folder }}", id="files-folder", classes="text-caption", style="word-break: break-all;"
        )
        with v3.VList(density="compact", id="files-list", max_height=320, style="overflow-y: auto;"):
            v3.VListItem(
                title=("entry.folder ? entry.name + '/' : entry.name",),
                v_for="entry in files_entries",
                key="entry.path",
                classes="files-entry",
                click=(self.choose, "[entry.path, entry.folder]"),
            )
