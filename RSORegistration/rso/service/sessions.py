"""Where a worker keeps its sessions, and the lock that gives each session folder one writer.

A worker started over SSH keeps its sessions under a sessions root of its own machine
(``--sessions DIR``, default ``rso.core.paths.sessions_dir()``): ``<root>/<session id>/`` is a
session folder (rso.core.store) plus ``uploads/`` while its inputs arrive. A client names a
session by its id only, never by a path.

Two clients must not write to one session folder: ``SessionLock`` is a lock file naming the
holder's host and pid. A second worker gets ``SessionBusy`` (the protocol's "busy" error). A lock
whose process is gone (killed, machine rebooted) is stale and taken over.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import time
from dataclasses import fields
from pathlib import Path

from rso.errors import InputError
from rso.options import DEFAULT_DEVICE
from rso.service.protocol import FILE_ARGUMENTS

log = logging.getLogger(__name__)

LOCK_FILE = "worker.lock"
UPLOADS_FOLDER = "uploads"
STARTING_LOCK_S = 5.0  # an empty lock file younger than this belongs to a worker taking it right now


class SessionBusy(Exception):
    """The session folder is held by another live worker; the message says which."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class SessionLock:
    """``<folder>/worker.lock``, created exclusively; holds {"pid", "host", "since"} of its worker."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False

    def acquire(self) -> SessionLock:
        """Take the lock (creating the folder), or raise SessionBusy; a stale lock is taken over."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed, then a race with another worker doing the same
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_if_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, handle)
            self.held = True
            return self
        raise SessionBusy(
            f"session {self.folder.name} is open in another worker ({self._holder()}): "
            "close it there first, or wait until that worker has stopped"
        )

    def _clear_if_stale(self) -> None:
        owner = self._owner()
        stale = owner is None or (
            owner["host"] == socket.gethostname() and owner["pid"] is not None and not pid_alive(owner["pid"])
        )
        if stale:
            log.warning("taking over the stale lock of %s (%s)", self.folder, owner or "unreadable")
            self.path.unlink(missing_ok=True)

    def _owner(self) -> dict | None:
        """{"pid", "host"} of the holder; None for a lock nobody can hold any more (unreadable and old)."""
        try:
            owner = json.loads(self.path.read_text())
            return {"pid": int(owner["pid"]), "host": str(owner["host"])}
        except FileNotFoundError:
            return {"pid": None, "host": "(released meanwhile)"}
        except (OSError, ValueError, TypeError, KeyError):
            # Created but not yet written by a worker starting right now, or left half-written by a crash.
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                age = 0.0
            return None if age > STARTING_LOCK_S else {"pid": None, "host": "(a worker starting now)"}

    def _holder(self) -> str:
        owner = self._owner() or {"pid": None, "host": "?"}
        return f"pid {owner['pid']} on {owner['host']}" if owner["pid"] is not None else owner["host"]

    def release(self) -> None:
        """Remove the lock if this worker holds it (never another worker's)."""
        if not self.held:
            return
        self.held = False
        owner = self._owner() or {}
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)


class SessionsRoot:
    """The folder that holds a worker's sessions, named by id."""

    def __init__(self, root: str | Path | None = None):
        if root is None:
            from rso.core.paths import sessions_dir

            root = sessions_dir()
        self.root = Path(root).expanduser()

    def folder(self, session_id: str) -> Path:
        """An existing session's folder; InputError if there is no such session."""
        from rso.core.store import MANIFEST

        folder = self.root / session_id
        if not (folder / MANIFEST).is_file():
            raise InputError(f"no session {session_id!r} on this worker (sessions folder {self.root})")
        return folder

    def new_folder(self) -> tuple[str, Path]:
        """A fresh session id and its folder (not created yet): date, time and a random suffix."""
        while True:
            session_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
            folder = self.root / session_id
            if not folder.exists():
                return session_id, folder

    def session_id(self, folder: Path) -> str | None:
        """The id of a session folder in this root; None for a folder elsewhere (the local route)."""
        return folder.name if Path(folder).resolve().parent == self.root.resolve() else None


class PendingUploads:
    """The next new session's folder while its inputs arrive: ``<root>/<id>/uploads/``, locked from the
    first chunk."""

    def __init__(self, root: SessionsRoot):
        self.session_id, self.folder = root.new_folder()
        self.lock = SessionLock(self.folder).acquire()
        self.uploads = self.folder / UPLOADS_FOLDER

    def path_of(self, name: str, role: str) -> Path:
        """The uploaded file an ``open`` argument names; InputError for a path or a file never uploaded."""
        if Path(name).name != name or name.startswith("."):
            raise InputError(
                f"open: with neither folder nor session_id, {role} names an uploaded file, not a path "
                f"({name!r}): upload it first"
            )
        path = self.uploads / name
        if not path.is_file():
            arrived = sorted(p.name for p in self.uploads.glob("*") if not p.name.startswith(".")) or "none"
            raise InputError(f"open: {role} {name!r} has not been uploaded (complete uploads: {arrived})")
        return path

    def finish(self) -> None:
        """The session is written: its inputs are in it, so the uploaded copies go."""
        shutil.rmtree(self.uploads, ignore_errors=True)

    def discard(self) -> None:
        """Uploads that never became a session (the client went away first): remove them."""
        from rso.core.store import MANIFEST

        self.lock.release()
        if not (self.folder / MANIFEST).exists():
            shutil.rmtree(self.folder, ignore_errors=True)


class SessionKeeper:
    """A worker's open session, the lock on its folder, and the uploads for the next new session."""

    def __init__(self, root: str | Path | None = None):
        self.root = SessionsRoot(root)
        self.session = None  # rso.core.session.RegistrationSession once opened
        self._lock: SessionLock | None = None
        self._pending: PendingUploads | None = None

    @property
    def session_id(self) -> str | None:
        """The open session's id when it lives in the sessions root (the remote route), else None."""
        return self.root.session_id(Path(self.session.folder)) if self.session is not None else None

    def open(self, args: dict):
        """(session, reopened): a folder (reopened if it holds a session), a session by id, or a new one
        from uploads. A failed open leaves the open session, and every folder, as they were."""
        from rso.core.store import MANIFEST

        args = dict(args)
        folder, session_id = args.pop("folder", None), args.pop("session_id", None)
        if folder is None and session_id is None:
            return self._open_uploaded(args), False
        folder = self.root.folder(session_id) if session_id is not None else Path(folder)
        reopened = (folder / MANIFEST).is_file()
        session = None if reopened else new_session(args)  # every input read and checked first
        lock = self._lock_for(folder)
        try:
            if reopened:
                session = reopen_session(folder, args)
            else:
                session.attach_folder(folder)
        except BaseException:
            if lock is not self._lock:
                lock.release()
            raise
        self._adopt(session, lock)
        return session, reopened

    def _open_uploaded(self, args: dict):
        pending = self._pending
        if pending is None:
            raise InputError("open needs a folder, a session_id, or uploaded fixed and moving images")
        for role in FILE_ARGUMENTS:
            if args.get(role):
                args[role] = str(pending.path_of(args[role], role))
        session = new_session(args)
        session.attach_folder(pending.folder)
        pending.finish()
        self._pending = None
        self._adopt(session, pending.lock)
        return session

    def _lock_for(self, folder: Path) -> SessionLock:
        """The lock on ``folder``: the one held already, or a new one (SessionBusy if another worker has
        it)."""
        if self._lock is not None and self._lock.folder.resolve() == folder.resolve():
            return self._lock
        return SessionLock(folder).acquire()

    def _adopt(self, session, lock: SessionLock) -> None:
        """The opened session replaces the open one, whose folder is let go."""
        if self._lock is not None and self._lock is not lock:
            self._lock.release()
        self.session, self._lock = session, lock
        log.info("session in %s with %d step(s)", session.folder, len(session.history))

    def upload(self, args: dict) -> dict:
        """One chunk of an input for the next new session (``open`` without folder or session_id)."""
        from rso.service.transfer import receive_chunk

        if self._pending is None:
            self._pending = PendingUploads(self.root)
        return receive_chunk(
            self._pending.uploads, args["name"], args["offset"], args["data"], args.get("sha256")
        )

    def download(self, args: dict) -> dict:
        """One chunk of a file of the open session: ``current/...`` or ``export/...``."""
        from rso.service.transfer import read_chunk

        if self.session is None:
            raise InputError("no session is open: send open first")
        file = args["file"]
        path = Path(self.session.folder) / file
        if not path.is_file():
            raise InputError(f"download: the session has no {file} (yet); each step's reply names its files")
        return read_chunk(path, file, args.get("offset", 0))

    def close(self) -> None:
        """The worker ends: release the session's lock, remove uploads that never became a session."""
        if self._pending is not None:
            self._pending.discard()
            self._pending = None
        if self._lock is not None:
            self._lock.release()


def new_session(args: dict):
    """A new session from ``open``'s arguments (EngineSettings' and PairInputs' fields), every input read
    and checked; in memory until it is given a folder."""
    from rso.core.inputs import read_inputs
    from rso.core.workflow import start_session
    from rso.settings import EngineSettings, PairInputs

    if not args.get("fixed") or not args.get("moving"):
        raise InputError("open needs fixed and moving images to start a new session")
    engine_names = {f.name for f in fields(EngineSettings)}
    engine = EngineSettings.from_dict({k: v for k, v in args.items() if k in engine_names})
    inputs = PairInputs.from_dict({k: v for k, v in args.items() if k not in engine_names})
    return start_session(engine, read_inputs(inputs))


def reopen_session(folder: Path, args: dict):
    """The session in ``folder`` at its last accepted step; only ``device`` of the open arguments applies."""
    from rso.core.session import RegistrationSession

    ignored = sorted(set(args) - {"device"})
    if ignored:
        log.info("%s holds a session: reopening it; ignoring %s", folder, ", ".join(ignored))
    return RegistrationSession.open(folder, device=args.get("device", DEFAULT_DEVICE))
