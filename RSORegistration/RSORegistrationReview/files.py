"""The folders the review page may read images from and export to, and nothing beyond them.

Whoever has the page can type any path into its Files menu; the server opens and writes files as
the user who started it. So the page is given folders (``--allow-dir``; default: the folders of the
images given) and every path it receives is resolved (``..`` folded, symlinks followed) and refused
unless it lies inside one of them. The resolved path is what is then opened, so a symlink inside an
allowed folder that leads out of it is refused like the path it leads to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from rso.errors import InputError


@dataclass(frozen=True)
class Entry:
    """One line of a folder's listing: ``path`` is resolved; ``folder``: a folder (maybe a DICOM series)."""

    name: str
    path: str
    folder: bool

    def to_dict(self) -> dict:
        return asdict(self)


class AllowedFolders:
    """Paths inside ``folders`` (each must exist and be a folder), and a listing of their contents."""

    def __init__(self, folders: Iterable[str | os.PathLike]):
        roots = []
        for folder in folders:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise InputError(f"allowed folder {folder} is not a folder (--allow-dir)")
            roots.append(path.resolve())
        if not roots:
            raise InputError("the review page needs at least one folder to open files in (--allow-dir)")
        self.roots = tuple(dict.fromkeys(roots))  # in order, once each

    def inside(self, path: str | os.PathLike, what: str = "path") -> Path:
        """``path`` resolved, if it lies in an allowed folder (it need not exist yet); else InputError."""
        text = str(path).strip()
        if not text:
            raise InputError(f"give a {what}")
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            raise InputError(f"{what} {text}: give an absolute path on the server")
        resolved = candidate.resolve()  # strict=False: an export folder may be new
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise InputError(
                f"{what} {text} is outside the folders this review may use "
                f"({', '.join(map(str, self.roots))}; --allow-dir adds one)"
            )
        return resolved

    def listing(self, folder: str | os.PathLike) -> list[Entry]:
        """The folder's entries inside the allowed folders, folders first, by name; hidden ones left out."""
        resolved = self.inside(folder, "folder")
        try:
            children = sorted(resolved.iterdir(), key=lambda child: child.name.lower())
        except OSError as exc:
            raise InputError(f"cannot list {resolved}: {exc.strerror or exc}") from None
        entries = []
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                target = self.inside(child)
            except InputError:  # a symlink that leads out of the allowed folders: not shown
                continue
            entries.append(Entry(child.name, str(target), target.is_dir()))
        return sorted(entries, key=lambda entry: not entry.folder)  # stable: names stay in order

    def parent(self, folder: str | os.PathLike) -> Path | None:
        """The folder above ``folder``, or None when ``folder`` is an allowed folder itself (the top)."""
        resolved = self.inside(folder, "folder")
        return None if resolved in self.roots else resolved.parent


def default_folders(fixed: str | None, moving: str | None, truth: str | None, session: str | None) -> list:
    """Without --allow-dir: the folders of the images given (a DICOM folder's parent), else the session
    folder (a reopened session's inputs are in it)."""
    images = [Path(path).expanduser().absolute().parent for path in (fixed, moving, truth) if path]
    if images:
        return images
    return [Path(session).expanduser()] if session else []
