"""The worker process: one long-lived engine process that holds a registration session.

It reads requests (rso.protocol) from stdin in the main thread and runs each session command in a
thread of its own, so that ``cancel`` and ``status`` are answered while a step runs. Only
protocol lines go to stdout: the real stdout is kept for them and file descriptor 1 is pointed
at stderr, so that a print or a C library's output cannot corrupt the stream.

After every accepted step (and undo) the viewer's results (images and quality maps) are in
``<session folder>/current/``: whole, or after a native RSO step only the window it changed
(rso.service.viewer_files); ``labels`` writes the carried labels there too.
A client on another machine (docs/remote.md) uploads its inputs, opens a session by id in the
worker's sessions folder (rso.service.sessions) and downloads the results (rso.service.transfer).
Each session folder has one writer: the worker holds its lock until it opens another or exits.

Run as ``rso-registration worker`` or ``python -m rso.service.worker [--threads N] [--sessions DIR]``
(what the client starts; the Slicer extension ships the service but not the command line).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import rso.service.protocol as protocol
from rso import __version__, silence_known_warnings
from rso.errors import Cancelled, InputError
from rso.service.sessions import SessionBusy, SessionKeeper
from rso.service.viewer_files import ViewerFiles, download_names

if TYPE_CHECKING:
    from rso.core.optimize import CancelToken

log = logging.getLogger("rso.worker")

# <session>/current/: the viewer's files after each step; <session>/export/: an export without "out".
CURRENT_FOLDER, EXPORT_FOLDER = protocol.DOWNLOAD_FOLDERS
SHUTDOWN_JOIN_S = 60.0  # a step finishes its current iteration (or prediction) before it stops


@dataclass
class RunningRequest:
    request: protocol.Request
    cancel: CancelToken
    thread: threading.Thread | None = None


class Worker:
    """Serves requests from ``lines`` and writes protocol lines to ``out``; sessions opened by id live
    under ``sessions``."""

    def __init__(self, out: TextIO, sessions: str | Path | None = None):
        self.out = out
        self.keeper = SessionKeeper(sessions)  # the open session, its folder's lock, the next one's uploads
        self._job: RunningRequest | None = None
        self._job_lock = threading.Lock()
        self._out_lock = threading.Lock()
        self._client_gone = False
        self.viewer = ViewerFiles()  # which of the open session's current/ files are up to date

    @property
    def session(self):
        """The open rso.core.session.RegistrationSession, or None."""
        return self.keeper.session

    # ------------------------------------------------------------------------------ I/O
    def send(self, message: dict) -> None:
        line = protocol.encode(message)
        with self._out_lock:
            if self._client_gone:
                return
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):  # the client vanished: keep going until stdin ends too
                self._client_gone = True
                log.warning("the client's end of the pipe is closed; replies are dropped")

    def serve(self, lines: Iterable[str | protocol.ProtocolError]) -> int:
        """Until shutdown or end of input (the client went away); returns the exit code.

        ``lines`` are request lines, or ProtocolErrors for lines that could not be read
        (protocol.read_lines). Whatever a line holds, it gets a reply and the worker goes on.
        """
        self.send(protocol.ready(__version__, os.getpid()))
        try:
            for line in lines:
                if isinstance(line, protocol.ProtocolError):
                    self.send(protocol.error(None, "input", str(line)))
                    continue
                if not line.strip():
                    continue
                try:
                    request = protocol.parse_request(line)
                except protocol.ProtocolError as exc:
                    self.send(protocol.error(exc.request_id, "input", str(exc)))
                    continue
                if request.cmd == "shutdown":
                    self._stop_running()
                    self.send(protocol.done(request.id, {}))
                    return 0
                self._dispatch(request)
            log.info("input closed: stopping")
            self._stop_running()
            return 0
        finally:
            self.keeper.close()

    def _dispatch(self, request: protocol.Request) -> None:
        if request.cmd == "cancel":
            self.send(protocol.done(request.id, {"cancelling": self._cancel_running()}))
            return
        if request.cmd == "status":
            self.send(protocol.done(request.id, self._status()))
            return
        with self._job_lock:
            running = self._job
            if running is None:
                from rso.core.optimize import CancelToken

                log.info("%s (request %d) started", request.cmd, request.id)
                self._job = RunningRequest(request, CancelToken())
                self._job.thread = threading.Thread(
                    target=self._run_job,
                    args=(self._job,),
                    name=f"rso-{request.cmd}-{request.id}",
                    daemon=True,
                )
                self._job.thread.start()
                return
        self.send(
            protocol.error(
                request.id,
                "busy",
                f"busy with {running.request.cmd} (request {running.request.id}); wait for it or cancel it",
            )
        )

    def _cancel_running(self) -> int | None:
        with self._job_lock:
            if self._job is None:
                return None
            self._job.cancel.cancel()
            log.info("cancelling %s (request %d)", self._job.request.cmd, self._job.request.id)
            return self._job.request.id

    def _stop_running(self) -> None:
        self._cancel_running()
        job = self._job
        if job is not None and job.thread is not None:
            job.thread.join(SHUTDOWN_JOIN_S)

    # ------------------------------------------------------------------------------ jobs
    def _run_job(self, job: RunningRequest) -> None:
        request = job.request
        try:
            handler: Callable[[RunningRequest], dict] = getattr(self, f"_cmd_{request.cmd}")
            reply = protocol.done(request.id, handler(job))
        except Cancelled as exc:
            reply = protocol.error(request.id, "cancelled", str(exc))
        except SessionBusy as exc:
            reply = protocol.error(request.id, "busy", str(exc))
        except InputError as exc:
            reply = protocol.error(request.id, "input", str(exc))
        except Exception as exc:  # the worker keeps serving; the traceback goes to stderr
            log.error("%s (request %d) failed:\n%s", request.cmd, request.id, traceback.format_exc())
            reply = protocol.error(request.id, "internal", f"{type(exc).__name__}: {exc}")
        with self._job_lock:  # free before replying, so that the client's next request is not "busy"
            self._job = None
        self.send(reply)

    def _progress(self, job: RunningRequest):
        throttle = protocol.ProgressThrottle()

        def report(update) -> None:
            if throttle(update.iteration, update.iterations):
                self.send(protocol.progress(job.request.id, update))

        return report

    def _need_session(self):
        if self.session is None:
            raise InputError("no session is open: send open first")
        return self.session

    def _step_result(self, session, record, native_step: bool = False) -> dict:
        return step_result(session, record, self.viewer.after_step(session, record, native_step))

    # ------------------------------------------------------------------------------ commands
    def _cmd_open(self, job: RunningRequest) -> dict:
        session, reopened = self.keeper.open(dict(job.request.args))
        self.viewer = ViewerFiles()
        files = self.viewer.whole(session, rewrite=True) if session.history else {"paths": {}, "files": {}}
        return {
            **session_summary(session),
            "session_id": self.keeper.session_id,
            "reopened": reopened,
            **files,
        }

    def _cmd_viewer(self, job: RunningRequest) -> dict:
        """The whole viewer images (rewritten if a native step left only its window up to date)."""
        return self.viewer.whole(self._need_session())

    def _cmd_general(self, job: RunningRequest) -> dict:
        session = self._need_session()
        return self._step_result(session, session.general())

    def _cmd_iso(self, job: RunningRequest) -> dict:
        from rso.settings import ISOSettings

        session = self._need_session()
        settings = ISOSettings.from_dict(job.request.args)  # the protocol's iso arguments are its fields
        record = session.iso(settings, progress=self._progress(job), cancel=job.cancel)
        return self._step_result(session, record)

    def _cmd_rso(self, job: RunningRequest) -> dict:
        from rso.settings import RSOSettings

        session, args = self._need_session(), dict(job.request.args)
        box_ras, box_lps = args.pop("box_ras", None), args.pop("box_lps", None)
        if box_ras is not None:
            box = session.box_from_ras(box_ras)
        else:
            box = session.box_from_lps(box_lps[:3], box_lps[3:])
        settings = RSOSettings.from_dict(args)  # the protocol's other rso arguments are its fields
        record = session.rso(box, settings, progress=self._progress(job), cancel=job.cancel)
        return self._step_result(session, record, native_step=settings.mode == "native")

    def _cmd_undo(self, job: RunningRequest) -> dict:
        session = self._need_session()
        record = session.undo()
        result = self._step_result(session, record)
        result["undone"] = record is not None
        return result

    def _cmd_export(self, job: RunningRequest) -> dict:
        from rso.core.results import write_results

        session, args = self._need_session(), job.request.args
        out = args.get("out") or Path(session.folder) / EXPORT_FOLDER
        paths = {
            name: str(path)
            for name, path in write_results(session, out, figure=args.get("figure", True)).items()
        }
        return {"paths": paths, "files": download_names(session, paths)}

    def _cmd_upload(self, job: RunningRequest) -> dict:
        return self.keeper.upload(job.request.args)

    def _cmd_download(self, job: RunningRequest) -> dict:
        return self.keeper.download(job.request.args)

    def _cmd_labels(self, job: RunningRequest) -> dict:
        from rso.core.labels import LabelInput
        from rso.core.results import write_labels

        session, args = self._need_session(), job.request.args
        labels = LabelInput.read(args["labels"], args.get("colors"), args.get("reference"))
        out = Path(args["out"]) if "out" in args else Path(session.folder) / CURRENT_FOLDER
        paths, report = write_labels(session, labels, out)
        return {"paths": {name: str(path) for name, path in paths.items()}, "report": report}

    def _status(self) -> dict:
        job = self._job
        running = {"id": job.request.id, "cmd": job.request.cmd} if job is not None else None
        session = session_summary(self.session) if self.session is not None else None
        return {"running": running, "session": session, "version": __version__, "pid": os.getpid()}


# ---------------------------------------------------------------------------------- replies
def session_summary(session) -> dict:
    return {
        "folder": str(session.folder),
        "grid": session.grid.to_dict(),
        "steps": len(session.history),
        "history": [record.to_dict() for record in session.history],
        "model": session.model_source,
        "device": str(session.device),
        "precision": session.precision,
        # "artefact matching off: no projection geometry", or what matching compares (the status line)
        "artefact_matching": session.pair.matching_status(True),
    }


def step_result(session, record, viewer: dict) -> dict:
    """What a step's "done" carries: its record and metrics, the viewer's files (``ViewerFiles``: whole
    images, a patch, or none after a declined step), the history."""
    data = record.to_dict() if record is not None else None
    return {
        "record": data,
        "metrics": data["metrics"] if data else None,
        **viewer,
        "steps": len(session.history),
        "history": [r.to_dict() for r in session.history],
    }


# ---------------------------------------------------------------------------------- process
def protocol_stream() -> TextIO:
    """Keep the real stdout for protocol lines; send everything else written to stdout to stderr."""
    sys.stdout.flush()
    fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # C libraries' output too
    sys.stdout = sys.stderr
    return io.TextIOWrapper(io.FileIO(fd, "w"), encoding="utf-8", newline="\n", line_buffering=True)


def serve_stdio(threads: int | None = None, sessions: str | None = None) -> None:
    """Serve the protocol on this process's stdin/stdout until shutdown; ends the process."""
    out = protocol_stream()
    # The client governs the worker's life through stdin; a Ctrl-C meant for a parent script
    # must not kill a step half-way (the client cancels or closes stdin instead).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Known, harmless library warnings would crowd the stderr tail a user sees when the worker dies.
    silence_known_warnings()
    if threads:
        import torch

        torch.set_num_threads(threads)
    code = Worker(out, sessions).serve(protocol.read_lines(sys.stdin.buffer))
    # Everything is on disk (each write is atomic); skip the interpreter's teardown of torch and
    # MONAI, which takes seconds, so that closing or restarting a worker is quick.
    with contextlib.suppress(OSError, ValueError):  # the client is gone
        out.flush()
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _option(arguments: list[str], name: str) -> str | None:
    return arguments[arguments.index(name) + 1] if name in arguments[:-1] else None


if (
    __name__ == "__main__"
):  # python -m rso.service.worker [--threads N] [--sessions DIR]: what WorkerClient starts
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    threads = _option(sys.argv[1:], "--threads")
    serve_stdio(int(threads) if threads else None, _option(sys.argv[1:], "--sessions"))
