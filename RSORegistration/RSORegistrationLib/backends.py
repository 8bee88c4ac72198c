"""Where the engine runs: the worker process (Slicer) or this process (tests, scripts).

Both speak the worker protocol of ``rso.protocol``: ``request(cmd, **args) -> id`` without
blocking, and ``poll()`` returning progress / done / error messages. The logic sees only this
interface; the in-process backend runs the worker's own code in a thread, so the logic's tests
exercise the real protocol without starting a process.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
from typing import Protocol

from rso.options import DEFAULT_ENGINE

log = logging.getLogger(__name__)


class Backend(Protocol):
    def request(self, cmd: str, **args) -> int: ...
    def poll(self) -> list[dict]: ...
    def cancel(self) -> int | None: ...
    def stderr_tail(self) -> str: ...
    def close(self) -> None: ...


def slicer_python() -> str:
    """The interpreter a worker should run: Slicer's PythonSlicer inside Slicer, else this one."""
    return shutil.which("PythonSlicer") or sys.executable


def worker_backend(python: str | None = None, engine: str = DEFAULT_ENGINE) -> Backend:
    """The engine's worker client: one long-lived engine process, started here or over SSH.

    Local: the client puts the folder that holds ``rso`` on the worker's path itself, so the worker
    imports the same engine as this process (source tree or installed extension alike), and files
    are passed by path. ``engine="ssh:me@gpu-host"``: the worker runs there and every file travels
    inside the protocol (rso.service.remote; docs/remote.md).
    """
    # The engine's; imported late so the GUI loads without it.
    from rso.service.client import WorkerClient
    from rso.service.remote import RemoteWorker, engine_command

    command = engine_command(engine)
    if command is None:
        return WorkerClient(python=python or slicer_python())
    return RemoteWorker(WorkerClient(command=command))


class InProcessBackend:
    """The engine's own worker (rso.worker.Worker) served from a thread of this process.

    Same requests, same replies and the same result files as the worker process, cancel
    included; only the process isolation is missing. For tests, scripts and the screenshot.
    """

    def __init__(self):
        import queue
        import threading

        from rso.service.worker import Worker

        self._lines: queue.Queue[str | None] = queue.Queue()
        self._messages: list[dict] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.worker = Worker(out=_MessageSink(self._received))
        self._thread = threading.Thread(
            target=self.worker.serve,
            args=(iter(self._lines.get, None),),
            name="rso-in-process-worker",
            daemon=True,
        )
        self._thread.start()

    def _received(self, message: dict) -> None:
        with self._lock:
            self._messages.append(message)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def request(self, cmd: str, **args) -> int:
        from rso.service import protocol

        args = protocol.check_args(cmd, protocol.plain(args))  # bad arguments fail here, as with the client
        request_id = next(self._ids)
        self._lines.put(protocol.encode(protocol.Request(request_id, cmd, args).to_message()))
        return request_id

    def poll(self) -> list[dict]:
        with self._lock:
            messages, self._messages = self._messages, []
        return messages

    def cancel(self) -> int | None:
        return self.request("cancel") if self.alive else None

    def stderr_tail(self) -> str:
        return ""

    def close(self) -> None:
        if self.alive:
            self.request("shutdown")
            self._thread.join(60.0)


class _MessageSink:
    """A text stream that turns each protocol line the worker writes into a message."""

    def __init__(self, deliver):
        self.deliver, self._buffer = deliver, ""

    def write(self, text: str) -> int:
        from rso.service import protocol

        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                self.deliver(protocol.decode(line))
        return len(text)

    def flush(self) -> None:
        pass
