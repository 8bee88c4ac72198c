"""The worker protocol: line-delimited JSON between a client and ``rso-registration worker``.

This module is the one place the protocol is defined (docs/worker-protocol.md describes it for
people). It imports nothing heavy, so the Slicer GUI and the client can use it without torch.

* The worker's first line: ``{"event": "ready", "version", "protocol", "pid"}``.
* A request: ``{"id": <int>, "cmd": <name>, "args": {...}}``.
* Replies carry the request's id: ``progress`` (optimisation steps), then exactly one ``done``
  (``result``) or ``error`` (``kind``, one-line ``message``).
* The client itself adds ``died`` when the worker process ends unexpectedly.
* Files travel inside the protocol too (``upload``, ``download``: base64 chunks checked with
  SHA-256), so that a worker on another machine needs no shared file system (docs/remote.md).
* A request line is at most MAX_LINE_BYTES; a longer one is skipped in bounded reads and refused.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import PurePath
from typing import Any, BinaryIO

from rso.errors import InputError
from rso.settings import EngineSettings, ISOSettings, PairInputs, RSOSettings, kind_of

# 2: upload/download, open by upload or by session_id, the per-session lock ("busy"), bounded lines.
# 3: open takes the images' projection views; rso takes match_artefacts, returns; 4: iso takes
# match_artefacts; 5: open takes RTK projection geometries (and a placement) instead of views, and a fit mask;
# 6: open, iso and rso take exactly the fields of rso.settings (open's similarity and smoothness are now
# network_similarity and network_smoothness; series, initial transform, pre-alignment, metrics mask).
# 7: a native step replies with its window (patch) and the viewer command rewrites the whole images;
# 8: the viewer's whole images in current/ are uncompressed NIfTI (.nii); 9: iso takes end_fade_mm.
PROTOCOL_VERSION = 9

# Events the worker sends (``died`` comes from the client, not the worker).
EVENTS = ("ready", "progress", "done", "error", "died")
ERROR_KINDS = ("input", "cancelled", "busy", "internal")

STEP_COMMANDS = ("general", "iso", "rso")
# Answered at once, even while a step runs; every other command gets "busy" then.
CONTROL_COMMANDS = ("cancel", "status", "shutdown")

# At most this many progress lines per second and step (the last iteration is always sent).
PROGRESS_PER_SECOND = 5.0
MAX_MESSAGE_CHARS = 500
MAX_LINE_BYTES = 1 << 20  # a request line longer than this is refused without being held in memory
CHUNK_BYTES = 256 * 1024  # file bytes per upload/download line: ~350 KB of base64, well under the line limit
# What download may read: the viewer's files after each step, and an export without "out".
DOWNLOAD_FOLDERS = ("current", "export")
# open's file arguments: paths on the worker's machine when a folder is given, else uploaded files.
FILE_ARGUMENTS = ("model", *PairInputs.FILES)


class ProtocolError(InputError):
    """A line that is not a valid request; ``request_id`` is its id when that much could be read."""

    def __init__(self, message: str, request_id: int | None = None):
        super().__init__(message)
        self.request_id = request_id


# ------------------------------------------------------------------------------ argument checks
def _string(value) -> bool:
    return isinstance(value, str) and value != ""


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return (_integer(value) or isinstance(value, float)) and math.isfinite(value)


def _boolean(value) -> bool:
    return isinstance(value, bool)


def _count(value) -> bool:
    return _integer(value) and value >= 0


def _text(value) -> bool:
    return isinstance(value, str)


def _sha256(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _file_name(value) -> bool:
    """A plain file name: no folders, nothing hidden, so that an upload stays in its folder."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 128
        and not value.startswith(".")
        and re.fullmatch(r"[A-Za-z0-9._-]+", value) is not None
    )


def _session_file(value) -> bool:
    """``<folder>/<file name>`` with the folder one of DOWNLOAD_FOLDERS."""
    if not isinstance(value, str) or value.count("/") != 1:
        return False
    folder, name = value.split("/")
    return folder in DOWNLOAD_FOLDERS and _file_name(name)


def _session_id(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value) is not None


def _list_of(check: Callable[[Any], bool], count: int | None = None, what: str = "") -> Callable[[Any], bool]:
    def valid(value) -> bool:
        return (
            isinstance(value, list)
            and (count is None or len(value) == count)
            and all(check(v) for v in value)
        )

    valid.__doc__ = what
    return valid


_DESCRIPTIONS = {
    _string: "a non-empty string",
    _integer: "a whole number",
    _number: "a finite number",
    _boolean: "true or false",
    _count: "a whole number >= 0",
    _text: "a string",
    _sha256: "64 lowercase hex digits (SHA-256)",
    _file_name: "a plain file name (letters, digits, . _ -; no folders)",
    _session_file: f"<folder>/<file name> with the folder one of {DOWNLOAD_FOLDERS}",
    _session_id: "a session id (letters, digits, . _ -)",
}


@dataclass(frozen=True)
class Arg:
    check: Callable[[Any], bool]
    required: bool = False

    @property
    def description(self) -> str:
        return _DESCRIPTIONS.get(self.check) or self.check.__doc__ or "valid"


_BOX = _list_of(_number, 6, "a list of 6 numbers")
_KIND_CHECKS = {
    "int": _integer,
    "float": _number,
    "bool": _boolean,
    "str": _string,
    "ints": _list_of(_integer, None, "a list of whole numbers"),
    "ints3": _list_of(_integer, 3, "a list of 3 whole numbers"),
}


def settings_arguments(settings: type) -> dict[str, Arg]:
    """A settings dataclass's fields (rso.settings) as a command's arguments: the protocol passes them
    whole, under their own names."""
    return {f.name: Arg(_KIND_CHECKS[kind_of(f)]) for f in dataclass_fields(settings)}


# Every command and its arguments. A null value is the same as leaving the argument out.
COMMANDS: dict[str, dict[str, Arg]] = {
    "open": {
        # folder: a session folder on the worker's machine (local route; the files are paths);
        # session_id: a session in the worker's sessions folder, reopened (remote route);
        # neither: a new session from uploaded files (remote route; the files name uploads).
        "folder": Arg(_string),
        "session_id": Arg(_session_id),
        **settings_arguments(EngineSettings),
        **settings_arguments(PairInputs),  # fixed and moving are needed unless the session exists
    },
    "general": {},
    "iso": settings_arguments(ISOSettings),
    "rso": {
        "box_ras": Arg(_BOX),
        "box_lps": Arg(_BOX),  # exactly one of the two
        **settings_arguments(RSOSettings),
    },
    "undo": {},
    # The whole viewer images in current/ (after native steps, whose replies carry only their window).
    "viewer": {},
    "export": {
        "out": Arg(_string),
        "figure": Arg(_boolean),
    },  # no out: into the session's export/, to download
    # One chunk of a file for the next new session; the last chunk carries the whole file's SHA-256.
    "upload": {
        "name": Arg(_file_name, required=True),
        "offset": Arg(_count, required=True),
        "data": Arg(_text, required=True),
        "sha256": Arg(_sha256),
    },
    "download": {"file": Arg(_session_file, required=True), "offset": Arg(_count)},
    # A label map drawn on the moving image, carried onto the fixed one (default out: <folder>/current).
    "labels": {
        "labels": Arg(_string, required=True),
        "colors": Arg(_string),
        "reference": Arg(_string),
        "out": Arg(_string),
    },
    "status": {},
    "cancel": {},
    "shutdown": {},
}


@dataclass(frozen=True)
class Request:
    id: int
    cmd: str
    args: dict = field(default_factory=dict)

    def to_message(self) -> dict:
        return {"id": self.id, "cmd": self.cmd, "args": self.args}


def check_args(cmd: str, args: dict, request_id: int | None = None) -> dict:
    """The arguments with nulls dropped; ProtocolError names the first problem."""
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}", request_id)
    if not isinstance(args, dict):
        raise ProtocolError(f"{cmd}: args must be a JSON object", request_id)
    spec = COMMANDS[cmd]
    given = {name: value for name, value in args.items() if value is not None}
    for name, value in given.items():
        if name not in spec:
            known = ", ".join(spec) or "none"
            raise ProtocolError(f"{cmd}: unknown argument {name!r} (arguments: {known})", request_id)
        if not spec[name].check(value):
            raise ProtocolError(f"{cmd}: {name} must be {spec[name].description}, not {value!r}", request_id)
    missing = [name for name, arg in spec.items() if arg.required and name not in given]
    if missing:
        raise ProtocolError(f"{cmd}: missing argument {', '.join(missing)}", request_id)
    if cmd == "rso" and ("box_ras" in given) == ("box_lps" in given):
        raise ProtocolError(
            "rso: give exactly one of box_ras [R1,A1,S1,R2,A2,S2] or box_lps [x1,y1,z1,x2,y2,z2]", request_id
        )
    if cmd == "open" and "folder" in given and "session_id" in given:
        raise ProtocolError(
            "open: give folder (a path on the worker's machine) or session_id, not both", request_id
        )
    return given


def parse_request(line: str) -> Request:
    """One request line -> a checked Request, or ProtocolError."""
    message = decode(line)
    request_id = message.get("id")
    if not _integer(request_id):
        raise ProtocolError(f"a request needs an integer id, not {request_id!r}")
    cmd = message.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("a request needs a cmd (string)", request_id)
    return Request(request_id, cmd, check_args(cmd, message.get("args") or {}, request_id))


# ------------------------------------------------------------------------------ lines
def read_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[str | ProtocolError]:
    """The request lines of a binary stream, decoded; a line over ``limit`` bytes or not UTF-8 is a
    ProtocolError.

    An overlong line is read and dropped in pieces of ``limit`` bytes, so a client cannot make the
    worker hold more than that in memory. Ends when the stream does (the client went away).
    """
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(limit)
            yield ProtocolError(f"a request line is longer than {limit} bytes; it was skipped")
            continue
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ProtocolError(f"a request line is not UTF-8 ({exc.reason} at byte {exc.start})")


def encode(message: dict) -> str:
    """One JSON line (no newline): numpy values become plain ones, NaN/inf become null."""
    return json.dumps(plain(message), separators=(",", ":"), allow_nan=False)


def decode(line: str) -> dict:
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"not a JSON line ({exc.msg} at column {exc.colno}): {line.strip()[:80]!r}"
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. a number of 5000 digits, or arrays nested 100000 deep
        raise ProtocolError(f"not a usable JSON line ({type(exc).__name__}): {line.strip()[:80]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a protocol line must be a JSON object, not {type(message).__name__}")
    return message


def plain(value):
    """JSON-ready copy: tuples -> lists, paths -> strings, numpy scalars/arrays -> numbers/lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------ messages
def ready(version: str, pid: int) -> dict:
    return {"event": "ready", "version": version, "protocol": PROTOCOL_VERSION, "pid": pid}


def progress(request_id: int, update) -> dict:
    """``update`` is an rso.optimize.Progress (step, iteration, iterations, loss, elapsed, eta)."""
    return {"id": request_id, "event": "progress", **update.to_dict()}


def done(request_id: int | None, result: dict) -> dict:
    return {"id": request_id, "event": "done", "result": result}


def error(request_id: int | None, kind: str, message: str) -> dict:
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return {"id": request_id, "event": "error", "kind": kind, "message": one_line(message)}


def died(returncode: int | None, stderr: str) -> dict:
    return {
        "id": None,
        "event": "died",
        "returncode": returncode,
        "stderr": stderr,
        "message": f"the worker process ended (exit code {returncode})",
    }


def one_line(text: str) -> str:
    """Messages are one line: a GUI shows them in a status bar."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


class ProgressThrottle:
    """Lets through at most ``per_second`` updates, plus the first and always the last iteration."""

    def __init__(self, per_second: float = PROGRESS_PER_SECOND, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = 1.0 / per_second, clock
        self._last: float | None = None

    def __call__(self, iteration: int, iterations: int) -> bool:
        now = self.clock()
        if iteration >= iterations or self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False
