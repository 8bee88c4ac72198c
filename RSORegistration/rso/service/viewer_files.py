"""The viewer's files in ``<session>/current/`` after each step, sized by what the step changed.

A step that changed the field anywhere (general, ISO, a network RSO step, undo) rewrites the whole
images (``results.write_images``). A native RSO step changed one window of the fixed grid (locality,
rso.core.overlay): only that window of each image is written, as ``current/patch-<name>.nrrd``, and
the reply says where it goes; the whole files are then out of date and are rewritten when something
asks for them (the ``viewer`` command, a reopen). At 1 mm a whole rewrite takes tens of seconds and
a window a fraction of one. A step the guard declined changed nothing and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from rso.service.protocol import DOWNLOAD_FOLDERS

CURRENT_FOLDER = DOWNLOAD_FOLDERS[0]
PATCH_PREFIX = "patch-"


class ViewerFiles:
    """Which files in one session's ``current/`` describe the current field."""

    def __init__(self):
        self.whole_out_of_date = False

    def after_step(self, session, record, native_step: bool) -> dict:
        """The reply's ``paths`` (whole images, when rewritten), ``files`` (their download names) and,
        after a native step, ``patch``: {"window": [[z0, z1], [y0, y1], [x0, x1]] of the fixed grid,
        "paths", "files", "clear": the images to zero before pasting (the last step's change)}."""
        from rso.core.overlay import changed_window

        if record is not None and record.kind == "rso" and not record.accepted:
            return {"paths": {}, "files": {}}
        window = changed_window(session) if native_step and self._has_whole(session) else None
        if window is None:
            return self._whole_reply(session)
        return {"paths": {}, "files": {}, "patch": self._patch(session, window)}

    def whole(self, session, rewrite: bool = False) -> dict:
        """The whole images, rewritten first if a native step left them out of date (or ``rewrite``: a
        reopened session's files may be an earlier worker's, left out of date by its native steps)."""
        if rewrite or self.whole_out_of_date or not self._has_whole(session):
            return self._whole_reply(session)
        folder = Path(session.folder) / CURRENT_FOLDER
        paths = {
            name: str(folder / file) for name, file in viewer_files().items() if (folder / file).is_file()
        }
        return {"paths": paths, "files": download_names(session, paths)}

    def _whole_reply(self, session) -> dict:
        from rso.core.results import write_images

        written = write_images(session, Path(session.folder) / CURRENT_FOLDER, compress=False)
        self.whole_out_of_date = False
        paths = {name: str(path) for name, path in written.items()}
        return {"paths": paths, "files": download_names(session, paths)}

    def _patch(self, session, window) -> dict:
        from rso.core.overlay import window_products, write_patch

        self.whole_out_of_date = True  # from now on, even if writing the window fails
        images = window_products(session, window)
        folder = Path(session.folder) / CURRENT_FOLDER
        written = write_patch(images, folder, prefix=PATCH_PREFIX)
        paths = {name: str(path) for name, path in written.items()}
        return {
            "window": [[a, b] for a, b in zip(window.lo, window.hi)],  # numpy k, j, i order
            "paths": paths,
            "files": download_names(session, paths),
            "clear": ["change"],
        }

    @staticmethod
    def _has_whole(session) -> bool:
        return (Path(session.folder) / CURRENT_FOLDER / viewer_files()["warped"]).is_file()


def viewer_files() -> dict[str, str]:
    """The whole images' file names in ``current/``: uncompressed (a viewer rewrites them often)."""
    from rso.core.results import image_files

    return image_files(compress=False)


def download_names(session, paths: dict[str, str]) -> dict[str, str]:
    """The paths inside the session folder as ``download`` names them ("current/warped.nii")."""
    folder = Path(session.folder).resolve()
    files = {}
    for name, path in paths.items():
        resolved = Path(path).resolve()
        relative = resolved.relative_to(folder) if folder in resolved.parents else None
        if relative is not None and relative.parts[0] in DOWNLOAD_FOLDERS:
            files[name] = relative.as_posix()
    return files
