"""The engine's backend and the queue of requests it gets, one at a time, without ever blocking.

``process()`` drains the backend's messages and sends the next queued request: in Slicer a QTimer
calls it, in a script the logic's ``wait()`` does. What each answer means for the scene is not
decided here: every answer goes to an ``EngineEvents`` (the logic's StepOutcomes).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rso.errors import InputError

from .backends import Backend

log = logging.getLogger(__name__)


class RegistrationError(RuntimeError):
    """A step failed in the engine or the worker died; the message says which and why."""


@dataclass
class StepRequest:
    cmd: str
    args: dict = field(default_factory=dict)
    region: object = None  # the ROI node an RSO step refines, or the contours a labels request carries
    request_id: int | None = None


class EngineEvents(Protocol):
    """What the queue reports: a request sent, its progress, its answer, or the engine's death."""

    def started(self, job: StepRequest) -> None: ...
    def progress(self, job: StepRequest, message: dict) -> None: ...
    def done(self, job: StepRequest, result: dict) -> None: ...
    def failed(self, job: StepRequest, kind: str, message: str) -> None: ...
    def died(self, message: dict, stderr_tail: str) -> None: ...


class EngineQueue:
    """The backend (made on first use) and the requests waiting for it; one runs at a time.

    ``backend_factory``: makes the backend (the worker process, or an in-process one for tests).
    ``engine_setting``: the engine parameter now ("local", "ssh:..."), remembered with the backend it
    started, so that a changed setting starts a new backend with the next session.
    """

    def __init__(
        self, backend_factory: Callable[[], Backend], engine_setting: Callable[[], str], events: EngineEvents
    ):
        self.backend_factory, self.engine_setting, self.events = backend_factory, engine_setting, events
        self.backend: Backend | None = None
        self.backend_engine: str | None = None  # the engine setting the backend was started with
        self.queue: deque[StepRequest] = deque()
        self.running: StepRequest | None = None
        self.open_queued = False  # an "open" is queued or running: steps may be queued after it
        self.session_open = False
        self.last_progress: dict | None = None

    @property
    def busy(self) -> bool:
        return self.running is not None or bool(self.queue)

    @property
    def can_step(self) -> bool:
        """Whether a step may be asked for now: a session is open (or opening)."""
        return self.session_open or self.open_queued

    def holds(self, region) -> bool:
        """Whether a queued or running request is about this region."""
        return any(job.region is region for job in self.queue) or (
            self.running is not None and self.running.region is region
        )

    # ----------------------------------------------------------------------------- requests
    def enqueue(self, job: StepRequest) -> None:
        self.queue.append(job)

    def step(self, job: StepRequest) -> None:
        """Queue a step on the session; refused (InputError) when there is none."""
        if not self.can_step:
            raise InputError("no registration session: select the volumes and run the general model first")
        self.enqueue(job)

    def cancel_all(self) -> None:
        """Drop the queue and interrupt the running request (its answer still comes)."""
        self.queue.clear()
        if self.running is not None and self.backend is not None:
            self.backend.cancel()

    def cancel(self) -> str | None:
        """Drop queued steps and interrupt the running one; returns the status line to show, if any."""
        dropped = len(self.queue)
        self.queue.clear()
        if self.running is not None and self.backend is not None:
            self.backend.cancel()
            return "cancelling..."
        if dropped:
            return f"cancelled {dropped} queued step(s); the registration is unchanged"
        return None

    def forget(self) -> None:
        """The scene is closing: no session any more; an answer still coming refers to removed nodes."""
        self.cancel_all()
        self.running = None  # its answer is ignored when it comes
        self.session_open = self.open_queued = False

    # ------------------------------------------------------------------------------ backend
    def start(self) -> None:
        """Start the engine's process now rather than with the first request (torch loads for seconds)."""
        if self.backend is None:
            self.backend = self.backend_factory()

    def keep_backend_for(self, engine: str) -> None:
        """Close a backend started for another engine setting; the next request starts one there."""
        if self.backend is not None and self.backend_engine not in (None, engine):
            self.backend.close()
            self.backend = None

    def restart(self) -> None:
        """A new engine process (the old one stopped); backends that cannot restart are kept."""
        if self.backend is not None and hasattr(self.backend, "restart"):
            self.backend.restart()

    def close(self) -> None:
        self.queue.clear()
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    # ------------------------------------------------------------------------- message loop
    def process(self) -> bool:
        """Handle whatever the engine sent and send the next queued request; never blocks. True while busy."""
        if self.backend is not None:
            for message in self.backend.poll():
                self._handle(message)
        if self.running is None and self.queue:
            self._send(self.queue.popleft())
        return self.busy

    def _send(self, job: StepRequest) -> None:
        if self.backend is None:
            self.backend, self.backend_engine = self.backend_factory(), self.engine_setting()
        job.request_id = self.backend.request(job.cmd, **job.args)
        self.running = job
        self.last_progress = None
        self.events.started(job)

    def _handle(self, message: dict) -> None:
        event = message.get("event")
        if event == "died":
            self._died(message)
            return
        job = self.running
        if job is None or message.get("id") != job.request_id:
            log.debug("ignoring a message for another request: %s", message)
            return
        if event == "progress":
            self.last_progress = message
            self.events.progress(job, message)
        elif event == "done":
            self.running = None
            if job.cmd == "open":
                self.open_queued, self.session_open = False, True
            self.events.done(job, message.get("result") or {})
        elif event == "error":
            self.running = None
            self._fail(job, message.get("kind", "error"), message.get("message", ""))

    def _fail(self, job: StepRequest, kind: str, message: str) -> None:
        if kind == "busy":  # the engine still finishes a cancelled step: ask again shortly
            self.queue.appendleft(job)
            return
        self.queue.clear()  # later steps were planned on this one's result
        if job.cmd == "open":
            self.open_queued = False
        self.events.failed(job, kind, message)

    def _died(self, message: dict) -> None:
        tail = message.get("stderr") or (self.backend.stderr_tail() if self.backend is not None else "")
        self.queue.clear()
        self.running, self.session_open, self.open_queued = None, False, False
        self.events.died(message, tail)
