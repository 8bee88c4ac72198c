"""A worker on another machine: the engine setting, and sessions whose files travel in the protocol.

* ``engine_command("ssh:me@gpu-host")`` is the command that starts a worker there over SSH. SSH
  authenticates and encrypts; nothing listens on a port of ours (docs/remote.md).
* ``open_by_upload`` and ``download_results`` are the remote route for scripts: inputs are
  uploaded into the worker's own sessions folder, results downloaded; no path crosses over.
* ``RemoteWorker`` puts that route behind the interface of a local worker (``request`` / ``poll``
  / ``cancel``), so that the Slicer module's logic does not know the difference: it names local
  files and a local session folder, as it does with a local worker. The inputs are uploaded, the
  remote session's id is kept in ``<folder>/remote.json`` (Reopen resumes it), and the files of
  each step are downloaded into ``<folder>/current/``.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import shlex
import threading
from pathlib import Path

import rso.service.protocol as protocol
from rso.errors import Cancelled, InputError
from rso.options import DEFAULT_ENGINE
from rso.service.client import WorkerClient, WorkerError

log = logging.getLogger(__name__)

REMOTE_RECORD = "remote.json"  # in a local session folder: which remote session it mirrors
REMOTE_PROGRAM = ("rso-registration", "worker")
# No password prompt (there is no terminal to answer it); notice a dead link within a minute.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4")
IDLE_CHECK_S = 0.5


def engine_command(engine: str) -> list[str] | None:
    """None for "local"; for "ssh:DESTINATION [COMMAND...]" the ssh command line that starts a worker.

    DESTINATION is anything ssh takes: ``me@gpu-host``, a Host of ~/.ssh/config (where a port and a
    key belong), ``ssh://me@gpu-host:2222``. COMMAND defaults to ``rso-registration worker``; give
    it when the program is not on the remote PATH: ``ssh:gpu /opt/rso/bin/rso-registration worker``.
    """
    engine = (engine or DEFAULT_ENGINE).strip()
    if engine == DEFAULT_ENGINE:
        return None
    if not engine.startswith("ssh:"):
        raise InputError(
            f"engine must be {DEFAULT_ENGINE!r} or 'ssh:DESTINATION' (e.g. ssh:me@gpu-host), not {engine!r}"
        )
    try:
        words = shlex.split(engine[len("ssh:") :])
    except ValueError as exc:
        raise InputError(f"engine {engine!r}: {exc}") from None
    if not words or words[0].startswith("-"):
        raise InputError(f"engine {engine!r} names no SSH destination (e.g. ssh:me@gpu-host)")
    return ["ssh", *SSH_OPTIONS, words[0], *(words[1:] or REMOTE_PROGRAM)]


def upload_name(role: str, path: str | Path) -> str:
    """The name an input travels under: its role and its own suffixes (the worker reads the format from
    them)."""
    name = role + "".join(Path(path).suffixes)
    protocol.check_args(
        "upload", {"name": name, "offset": 0, "data": ""}
    )  # InputError if the name cannot travel
    return name


def open_by_upload(
    client: WorkerClient, fixed: str | Path, moving: str | Path, timeout: float | None = None, **args
) -> dict:
    """Upload the inputs and open a new session from them; the result's ``session_id`` reopens it later.

    ``args`` are open's other arguments; its files (``truth``, ``reference``, a ``model``
    checkpoint) are uploaded too. Nothing names a path of this machine to the worker.
    """
    check_protocol(client)
    files = {
        role: args.pop(role, None) for role in protocol.FILE_ARGUMENTS if role not in ("fixed", "moving")
    }
    files.update(fixed=fixed, moving=moving)
    names = {}
    for role, path in files.items():
        if path:
            names[role] = upload_name(role, path)
            client.upload(path, names[role])
    return client.call("open", timeout=timeout, **names, **args)


def check_protocol(client: WorkerClient) -> None:
    """A worker installed elsewhere may be another version: refuse one that speaks another protocol."""
    ready = client.wait_ready()
    if ready.get("protocol") != protocol.PROTOCOL_VERSION:
        raise InputError(
            f"the worker speaks protocol {ready.get('protocol')} (rso-registration {ready.get('version')}), "
            f"this client {protocol.PROTOCOL_VERSION}: install the same version on both machines"
        )


def download_results(client: WorkerClient, files: dict[str, str], out: str | Path) -> dict[str, str]:
    """Download a reply's ``files`` ({name: "current/warped.nii", ...}) into ``out``;
    returns {name: local path}."""
    return {name: str(client.download(file, Path(out) / Path(file).name)) for name, file in files.items()}


class RemoteWorker:
    """The local worker's interface over a worker that shares no files with this machine.

    ``request`` returns at once; one background thread runs the requests in order (upload,
    open, step, download) and ``poll`` hands over progress / done / error messages under the
    request's own id, with local paths in ``paths``. ``cancel`` goes to the worker at once.
    """

    def __init__(self, client: WorkerClient):
        self.client = client
        self._ids = itertools.count(1)
        self._jobs: queue.Queue = queue.Queue()
        self._messages: queue.Queue = queue.Queue()
        self._folder: Path | None = None  # the local mirror of the open session
        self._died_reported = False
        self._thread = threading.Thread(target=self._serve, name="rso-remote-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------ the interface
    def request(self, cmd: str, **args) -> int:
        args = protocol.check_args(cmd, protocol.plain(args))
        if cmd in protocol.CONTROL_COMMANDS:
            return self.client.request(cmd, **args)  # answered at once, even while a step runs
        request_id = next(self._ids)
        self._jobs.put((request_id, cmd, args))
        return request_id

    def poll(self) -> list[dict]:
        messages = []
        while True:
            try:
                messages.append(self._messages.get_nowait())
            except queue.Empty:
                return messages

    def cancel(self) -> int | None:
        return self.client.cancel()

    def stderr_tail(self) -> str:
        return self.client.stderr_tail()

    @property
    def alive(self) -> bool:
        return self.client.alive

    def restart(self) -> None:
        """A new connection (and worker); open the session folder again to resume it."""
        self.client.restart()
        self._died_reported = False

    def close(self) -> None:
        self._jobs.put(None)
        self.client.close()
        self._thread.join(10.0)

    # ------------------------------------------------------------------------ the thread
    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_CHECK_S)
            except queue.Empty:
                self._report_death()
                continue
            if job is None:
                return
            request_id, cmd, args = job
            self._messages.put(self._run(request_id, cmd, args))

    def _report_death(self) -> None:
        """A worker that dies between requests is reported as a local one is, once."""
        died = self.client.died
        if died is not None and not self._died_reported:
            self._died_reported = True
            self._messages.put(died)

    def _run(self, request_id: int, cmd: str, args: dict) -> dict:
        try:
            handler = {"open": self._open, "export": self._export}.get(cmd, self._step)
            return protocol.done(request_id, handler(request_id, cmd, args))
        except InputError as exc:
            return protocol.error(request_id, "input", str(exc))
        except Cancelled as exc:
            return protocol.error(request_id, "cancelled", str(exc))
        except WorkerError as exc:
            if exc.kind == "died":
                self._died_reported = True
                return protocol.died(exc.returncode, exc.stderr)
            return protocol.error(
                request_id, exc.kind if exc.kind in protocol.ERROR_KINDS else "internal", str(exc)
            )
        except Exception as exc:  # a local failure (disk full, ...): reported like the worker's own
            log.exception("%s failed", cmd)
            return protocol.error(request_id, "internal", f"{type(exc).__name__}: {exc}")

    def _open(self, request_id: int, cmd: str, args: dict) -> dict:
        """Reopen the remote session a local folder mirrors, or upload the inputs and start one."""
        args = dict(args)
        folder = Path(args.pop("folder"))
        record = folder / REMOTE_RECORD
        if record.is_file():
            check_protocol(self.client)
            session_id = json.loads(record.read_text())["session_id"]
            result = self.client.call("open", session_id=session_id, device=args.get("device"))
        else:
            result = open_by_upload(self.client, **args)
            folder.mkdir(parents=True, exist_ok=True)
            from rso.core.imageio import write_bytes_atomically

            write_bytes_atomically(json.dumps({"session_id": result["session_id"]}).encode(), record)
        self._folder = folder
        return self._localised(result, folder)

    def _step(self, request_id: int, cmd: str, args: dict) -> dict:
        def forward(message: dict) -> None:
            self._messages.put({**message, "id": request_id})

        result = self.client.call(cmd, on_progress=forward, **args)
        return self._localised(result, self._folder) if self._folder is not None else result

    def _export(self, request_id: int, cmd: str, args: dict) -> dict:
        args = dict(args)
        out = args.pop("out", None)
        result = self.client.call("export", **args)
        if out is not None:
            result = {**result, "paths": download_results(self.client, result.get("files") or {}, out)}
        return result

    def _localised(self, result: dict, folder: Path) -> dict:
        """The reply with its files downloaded into the local mirror and ``paths`` pointing at them."""
        files = result.get("files") or {}
        local = download_results(self.client, files, folder / "current") if files else {}
        if result.get("patch"):  # a native step's window of each viewer image
            patch = result["patch"]
            patch = {**patch, "paths": download_results(self.client, patch["files"], folder / "current")}
            result = {**result, "patch": patch}
        return {**result, "paths": local, "folder": str(folder)}
