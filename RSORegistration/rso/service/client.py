"""The client of the worker process (rso.service.worker): used by the Slicer module's logic and by scripts.

``request`` and ``poll`` never block, which is what a GUI timer needs; ``wait`` and ``call`` block,
which is what scripts and tests need. If the worker dies, ``poll`` reports a ``died`` message and
``wait`` raises WorkerError, both with the last lines the worker wrote to stderr. ``restart``
starts a fresh worker; opening the same session folder again resumes from its last accepted step.

The worker can be started through any command, e.g. on a GPU server over SSH (docs/remote.md):
``WorkerClient(command=["ssh", "gpu-host", "rso-registration", "worker"])``. Such a worker shares
no files with this machine: ``upload`` sends the inputs and ``download`` fetches the results
(rso.service.remote does both for a whole session).

    with WorkerClient() as worker:
        worker.call("open", fixed="fixed.nii.gz", moving="moving.nii.gz", folder="session")
        worker.call("general")
        worker.call("iso", iterations=100, on_progress=print)
        worker.call("rso", box_ras=[-40, -20, 10, 10, 30, 60], iterations=400)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import rso.service.protocol as protocol
from rso.errors import Cancelled, InputError
from rso.service.allocator import with_tcmalloc

log = logging.getLogger(__name__)

STDERR_LINES = 50
CLOSE_TIMEOUT_S = 10.0
TRANSFER_TIMEOUT_S = 120.0  # one chunk's round trip; a slow link still moves CHUNK_BYTES in that time
ENGINE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the rso package


class WorkerError(RuntimeError):
    """The worker failed (kind "internal"), refused (kind "busy"), or died (kind "died")."""

    def __init__(self, message: str, kind: str = "internal", returncode: int | None = None, stderr: str = ""):
        text = f"{message}\nlast lines of the worker's stderr:\n{stderr}" if stderr.strip() else message
        super().__init__(text)
        self.kind, self.returncode, self.stderr = kind, returncode, stderr


class _Connection:
    """One worker process, its reader threads and what they collected."""

    def __init__(self, command: list[str], env: dict[str, str], stderr_lines: int):
        self.messages: queue.Queue[dict] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=stderr_lines)
        self.stray: list[str] = []  # non-protocol lines on stdout: a worker bug, kept for tests
        self.closing = False
        self.died: dict | None = None
        self.write_lock = threading.Lock()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=env,
        )
        self.stderr_reader = threading.Thread(target=self._read_stderr, name="rso-worker-stderr", daemon=True)
        self.stdout_reader = threading.Thread(target=self._read_stdout, name="rso-worker-stdout", daemon=True)
        self.stderr_reader.start()
        self.stdout_reader.start()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.rstrip("\n")
            self.stderr.append(line)
            log.debug("worker: %s", line)

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            if not line.strip():
                continue
            try:
                self.messages.put(protocol.decode(line))
            except protocol.ProtocolError:
                log.warning("worker wrote a non-protocol line on stdout: %r", line[:200])
                self.stray.append(line)
        returncode = self.process.wait()
        self.stderr_reader.join(5.0)  # so that the tail holds the worker's last words
        if not self.closing:
            self.died = protocol.died(returncode, self.stderr_tail())
            log.error("worker died with exit code %s", returncode)
            self.messages.put(self.died)

    def stderr_tail(self) -> str:
        return "\n".join(list(self.stderr))

    def send(self, message: dict) -> None:
        with self.write_lock:
            try:
                self.process.stdin.write(protocol.encode(message) + "\n")
                self.process.stdin.flush()
            except (OSError, ValueError) as exc:  # it died: the stdout reader reports how
                log.warning("could not send %s to the worker: %s", message.get("cmd"), exc)


class WorkerClient:
    """Starts ``python -m rso.service.worker`` (or ``command``) and speaks rso.service.protocol with it."""

    def __init__(
        self,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        extra_args: Iterable[str] = (),
        stderr_lines: int = STDERR_LINES,
        command: Iterable[str] | None = None,
    ):
        """``env``: variables added to this process's environment for the worker. ``command``: how to start
        the worker instead of this engine's ``python -m rso.service.worker`` (e.g. through ssh)."""
        self.python, self.env, self.extra_args = python, dict(env or {}), list(extra_args)
        self.custom_command = list(command) if command is not None else None
        self.stderr_lines = stderr_lines
        self.ready: dict | None = None  # the worker's ready line, once seen
        self._ids = itertools.count(1)  # never reset, so that a restarted worker's ids stay unique
        self._stash: list[dict] = []  # messages wait() drained that belong to other requests
        self._conn: _Connection | None = None
        self._start()

    # ------------------------------------------------------------------------------ process
    @property
    def command(self) -> list[str]:
        if self.custom_command is not None:
            return self.custom_command + self.extra_args
        return [self.python, "-u", "-m", "rso.service.worker", *self.extra_args]

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        if (
            self.custom_command is None
        ):  # the worker imports the same engine as this process, source tree or installed
            paths = [str(ENGINE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
            env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
            env = with_tcmalloc(env)  # a local worker does the heavy work: start it with the faster allocator
        return env

    def _start(self) -> None:
        self.ready, self._stash = None, []
        self._conn = _Connection(self.command, self._environment(), self.stderr_lines)
        log.info("started worker pid %d", self._conn.process.pid)

    def restart(self) -> None:
        """A fresh worker (the old one is stopped if it still runs); reopen the session folder next."""
        self.close()
        self._start()

    @property
    def alive(self) -> bool:
        return self._conn is not None and self._conn.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._conn.process.pid if self._conn is not None else None

    @property
    def stray_stdout(self) -> list[str]:
        """Lines on the worker's stdout that were not protocol messages (there should be none)."""
        return list(self._conn.stray) if self._conn is not None else []

    def stderr_tail(self) -> str:
        """The worker's last lines of stderr (logs, warnings, tracebacks)."""
        return self._conn.stderr_tail() if self._conn is not None else ""

    @property
    def died(self) -> dict | None:
        """The ``died`` message once the worker has ended unexpectedly, else None."""
        return self._conn.died if self._conn is not None else None

    # ------------------------------------------------------------------------------ requests
    def request(self, cmd: str, **args) -> int:
        """Send a request without waiting; returns its id. Bad arguments raise InputError here."""
        if self._conn is None:
            raise WorkerError("the worker client is closed; call restart()", kind="died")
        args = protocol.check_args(cmd, protocol.plain(args))  # tuples, paths and numpy values are fine
        request_id = next(self._ids)
        self._conn.send(protocol.Request(request_id, cmd, args).to_message())
        return request_id

    def cancel(self) -> int | None:
        """Cancel the step in flight (its reply is a "cancelled" error); returns the cancel's id."""
        if not self.alive:
            return None
        return self.request("cancel")

    def poll(self) -> list[dict]:
        """Every message received since the last call, in order; never blocks."""
        messages, self._stash = self._stash, []
        while self._conn is not None:
            try:
                messages.append(self._conn.messages.get_nowait())
            except queue.Empty:
                break
        for message in messages:
            self._note(message)
        return messages

    def wait(
        self, request_id: int, timeout: float | None = None, on_progress: Callable[[dict], None] | None = None
    ) -> dict:
        """Block until the request is done; returns its result.

        Raises InputError (bad input), Cancelled, WorkerError (internal error, busy, or the worker
        died) or TimeoutError (the request keeps running). Other requests' messages are kept for poll().
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._next_for(request_id, deadline)
            event = message.get("event")
            if event == "died":
                raise WorkerError(
                    message["message"],
                    kind="died",
                    returncode=message.get("returncode"),
                    stderr=message.get("stderr", ""),
                )
            if event == "progress":
                if on_progress is not None:
                    on_progress(message)
            elif event == "done":
                return message.get("result") or {}
            elif event == "error":
                raise self._error(message)

    def call(
        self,
        cmd: str,
        timeout: float | None = None,
        on_progress: Callable[[dict], None] | None = None,
        **args,
    ) -> dict:
        """request + wait: run one command and return its result."""
        return self.wait(self.request(cmd, **args), timeout=timeout, on_progress=on_progress)

    def upload(
        self, path: str | os.PathLike, name: str | None = None, timeout: float | None = TRANSFER_TIMEOUT_S
    ) -> dict:
        """Send a file for the next new session (``open`` without folder names it); SHA-256 checked."""
        from rso.service.transfer import upload_file

        return upload_file(functools.partial(self.call, timeout=timeout), path, name or Path(path).name)

    def download(
        self, file: str, dest: str | os.PathLike, timeout: float | None = TRANSFER_TIMEOUT_S
    ) -> Path:
        """Fetch a file of the open session (a step's or export's ``files`` value) into ``dest``,
        atomically."""
        from rso.service.transfer import download_file

        return download_file(functools.partial(self.call, timeout=timeout), file, dest)

    def wait_ready(self, timeout: float | None = 120.0) -> dict:
        """Block until the worker has started (its engine imported); returns the ready line."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.ready is None:
            message = self._next_for(None, deadline)
            if message.get("event") == "died":
                raise WorkerError(
                    message["message"],
                    kind="died",
                    returncode=message.get("returncode"),
                    stderr=message.get("stderr", ""),
                )
        return self.ready

    def _next_for(self, request_id: int | None, deadline: float | None) -> dict:
        """The next message for this request (or a died/ready one); others are stashed for poll()."""
        for index, message in enumerate(self._stash):
            if self._belongs(message, request_id):
                return self._stash.pop(index)
        if self._conn is None:
            raise WorkerError("the worker client is closed; call restart()", kind="died")
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"no reply to request {request_id} in time; it is still running (cancel() stops it)"
                )
            if self._conn.died is not None and self._conn.messages.empty():
                return self._conn.died  # reported before: every later wait sees it too
            try:
                message = self._conn.messages.get(
                    timeout=min(remaining, 0.5) if remaining is not None else 0.5
                )
            except queue.Empty:
                continue
            self._note(message)
            if self._belongs(message, request_id):
                return message
            self._stash.append(message)

    @staticmethod
    def _belongs(message: dict, request_id: int | None) -> bool:
        return message.get("event") in ("died", "ready") or (
            request_id is not None and message.get("id") == request_id
        )

    def _note(self, message: dict) -> None:
        if message.get("event") == "ready":
            self.ready = message

    def _error(self, message: dict) -> Exception:
        kind, text = message.get("kind", "internal"), message.get("message", "")
        if kind == "input":
            return InputError(text)
        if kind == "cancelled":
            return Cancelled(text)
        if kind == "internal":
            time.sleep(0.1)  # the traceback went to stderr just before the reply: let the reader catch up
        return WorkerError(text, kind=kind, stderr=self.stderr_tail() if kind == "internal" else "")

    # ------------------------------------------------------------------------------ shutdown
    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> int | None:
        """Ask the worker to shut down (cancelling any step), then terminate or kill it; returns its exit
        code."""
        conn, self._conn = self._conn, None
        if conn is None:
            return None
        conn.closing = True
        process = conn.process
        if process.poll() is None:
            conn.send({"id": next(self._ids), "cmd": "shutdown", "args": {}})
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in %.0f s: terminating it", process.pid, timeout)
                process.terminate()
                try:
                    process.wait(5.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        conn.stdout_reader.join(5.0)
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        return process.returncode

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
