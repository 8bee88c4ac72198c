"""A real worker process fed malformed input: every case gets an error reply (or a clean end),
and the worker neither crashes nor loses its session.

One worker serves the module, with a session open (general step done); after each case the
test checks that the same process still serves that session. The vanishing client gets a
process of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from rso.core.session import RegistrationSession
from rso.errors import InputError
from rso.service import protocol
from rso.service.client import ENGINE_ROOT, WorkerClient
from rso.service.sessions import LOCK_FILE
from rso.simulation.phantom import phantom_pair

TINY = dict(channels=[4, 8, 16, 32, 64], grid=[16, 32, 32], device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pair")
    demo = phantom_pair()
    paths = {"fixed": folder / "fixed.nii.gz", "moving": folder / "moving.nii.gz"}
    sitk.WriteImage(demo.fixed, str(paths["fixed"]))
    sitk.WriteImage(demo.moving, str(paths["moving"]))
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def served(pair, tmp_path_factory):
    """(client, sessions root, session folder): a worker with a session after the general step."""
    root = tmp_path_factory.mktemp("sessions")
    with WorkerClient(extra_args=["--threads", "2", "--sessions", str(root)]) as client:
        folder = root / "local-session"
        client.call("open", **pair, folder=str(folder), **TINY, timeout=120)
        client.call("general", timeout=60)
        yield client, root, folder


def send_raw(client: WorkerClient, data: str) -> None:
    """Bytes the client itself would never send, straight into the worker's stdin."""
    stdin = client._conn.process.stdin
    stdin.write(data)
    stdin.flush()


def next_error(client: WorkerClient, request_id: int | None = None, timeout: float = 30.0) -> dict:
    """The next error message for ``request_id`` (None: errors about lines that had no readable id)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in client.poll():
            if message.get("event") == "error" and message.get("id") == request_id:
                return message
            assert message.get("event") != "died", message
        time.sleep(0.02)
    raise AssertionError(f"no error reply for request {request_id} in {timeout} s")


def assert_still_serving(client: WorkerClient, pid: int, folder: Path) -> None:
    status = client.call("status", timeout=30)
    assert status["pid"] == pid and client.alive
    assert status["session"]["steps"] == 1 and status["session"]["folder"] == str(folder)
    assert client.stray_stdout == []


@pytest.mark.parametrize(
    "line",
    [
        "this is not json\n",
        "[1, 2, 3]\n",
        '{"id": 1, "cmd": "status"\n',  # cut short
        "[" * 100000 + "]" * 100000 + "\n",  # nested deeper than any parser's stack
        '{"id": ' + "9" * 5000 + ', "cmd": "status"}\n',  # a number longer than Python converts
        b"\xff\xfe not utf-8\n".decode("latin-1"),
    ],
    ids=["text", "array", "truncated", "deeply-nested", "huge-number", "not-utf-8"],
)
def test_a_line_that_is_not_a_json_request_gets_an_error(served, line):
    client, _, folder = served
    pid = client.pid
    if line.startswith("\xff"):  # the client's pipe is text (UTF-8): write the raw bytes underneath it
        client._conn.process.stdin.flush()
        client._conn.process.stdin.buffer.write(line.encode("latin-1"))
        client._conn.process.stdin.buffer.flush()
    else:
        send_raw(client, line)
    error = next_error(client, None)
    assert error["kind"] == "input" and error["message"]
    assert_still_serving(client, pid, folder)


def worker_peak_memory_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_line_over_1_mb_is_refused_without_reading_it_into_memory(served):
    client, _, folder = served
    pid = client.pid
    peak_before = worker_peak_memory_kib(pid) if sys.platform == "linux" else None
    filler = "x" * (32 << 20)  # 32 MB: read whole, the worker's peak memory would grow by at least that
    send_raw(client, '{"id": 41, "cmd": "status", "args": {"pad": "' + filler + '"}}\n')
    error = next_error(client, None)
    assert error["kind"] == "input" and f"longer than {protocol.MAX_LINE_BYTES} bytes" in error["message"]
    if peak_before is not None:
        assert worker_peak_memory_kib(pid) - peak_before < 8 * 1024  # KiB: the line never was in memory
    assert_still_serving(client, pid, folder)


def test_an_unknown_command_gets_an_error(served):
    client, _, folder = served
    pid = client.pid
    send_raw(client, json.dumps({"id": 42, "cmd": "format_disk", "args": {}}) + "\n")
    error = next_error(client, 42)
    assert error["kind"] == "input" and "unknown command 'format_disk'" in error["message"]
    assert_still_serving(client, pid, folder)


@pytest.mark.parametrize(
    "request_line, message",
    [
        ({"id": 43, "cmd": "iso", "args": {"iterations": "five"}}, "iterations must be a whole number"),
        ({"id": 43, "cmd": "iso", "args": {"iterations": True}}, "iterations must be a whole number"),
        ({"id": 43, "cmd": "rso", "args": {"box_ras": [1, 2, 3]}}, "box_ras must be a list of 6 numbers"),
        (
            {"id": 43, "cmd": "open", "args": {"grid": "16,32,32", "folder": "x"}},
            "grid must be a list of 3 whole numbers",
        ),
        (
            {"id": 43, "cmd": "upload", "args": {"name": "x.nii", "offset": -1, "data": ""}},
            "offset must be a whole number >= 0",
        ),
        (
            {"id": 43, "cmd": "upload", "args": {"name": "../x.nii", "offset": 0, "data": ""}},
            "name must be a plain file name",
        ),
        (
            {"id": 43, "cmd": "download", "args": {"file": "../session.json"}},
            "file must be <folder>/<file name>",
        ),
        ({"id": 43, "cmd": "open", "args": {"session_id": "../other"}}, "session_id must be a session id"),
        ({"id": 43, "cmd": "general", "args": [1, 2]}, "args must be a JSON object"),
        ({"id": "43", "cmd": "general", "args": {}}, "integer id"),
    ],
    ids=[
        "text-for-int",
        "bool-for-int",
        "short-box",
        "text-grid",
        "negative-offset",
        "path-as-name",
        "escaping-download",
        "escaping-session",
        "args-list",
        "text-id",
    ],
)
def test_wrong_argument_types_get_an_error(served, request_line, message):
    client, _, folder = served
    pid = client.pid
    send_raw(client, json.dumps(request_line) + "\n")
    error = next_error(client, request_line["id"] if isinstance(request_line["id"], int) else None)
    assert error["kind"] == "input" and message in error["message"], error
    assert_still_serving(client, pid, folder)


def test_an_upload_with_a_bad_checksum_is_refused_and_discarded(served, pair):
    client, root, folder = served
    pid = client.pid
    data = Path(pair["moving"]).read_bytes()
    half = len(data) // 2
    first = base64.b64encode(data[:half]).decode()
    rest = base64.b64encode(data[half:]).decode()
    client.call("upload", name="moving.nii.gz", offset=0, data=first, timeout=30)
    with pytest.raises(InputError, match="a chunk at byte 7, but"):  # out of order
        client.call("upload", name="moving.nii.gz", offset=7, data=rest, timeout=30)
    with pytest.raises(InputError, match="not valid base64"):
        client.call("upload", name="moving.nii.gz", offset=half, data="%%%", timeout=30)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        client.call("upload", name="moving.nii.gz", offset=half, data=rest, sha256=wrong, timeout=30)
    uploads = list(root.glob("*/uploads"))
    assert len(uploads) == 1 and list(uploads[0].iterdir()) == []  # nothing half-arrived is kept
    # The same file sent again, whole and checked, arrives intact.
    reply = client.upload(pair["moving"], "moving.nii.gz")
    assert reply == {"name": "moving.nii.gz", "received": len(data), "complete": True}
    assert (uploads[0] / "moving.nii.gz").read_bytes() == data
    assert_still_serving(client, pid, folder)


def test_a_client_that_vanishes_mid_step_leaves_the_session_at_its_last_accepted_step(pair, tmp_path):
    """No WorkerClient here: a bare process whose client closes both pipes while ISO runs."""
    folder = tmp_path / "session"
    env = {**os.environ, "PYTHONPATH": str(ENGINE_ROOT)}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "rso.service.worker", "--threads", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )

    def until(request: dict, arrived) -> None:
        """Send one request, then read the worker's lines until ``arrived(message)``."""
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, f"no reply to {request['cmd']}"
            message = json.loads(process.stdout.readline())
            assert message.get("event") != "error", message
            if message.get("id") == request["id"] and arrived(message):
                return

    until(
        {"id": 1, "cmd": "open", "args": {**pair, "folder": str(folder), **TINY}},
        lambda m: m["event"] == "done",
    )
    until({"id": 2, "cmd": "general", "args": {}}, lambda m: m["event"] == "done")
    until(
        {"id": 3, "cmd": "iso", "args": {"iterations": 100000}},
        lambda m: m["event"] == "progress" and m["iteration"] >= 2,
    )
    assert (folder / LOCK_FILE).is_file()
    process.stdin.close()
    process.stdout.close()  # the client is gone: its replies have nowhere to go
    assert process.wait(timeout=60) == 0  # a clean end, not a crash
    log = (tmp_path / "stderr.txt").read_text()
    assert "input closed: stopping" in log and "Traceback" not in log
    assert not (folder / LOCK_FILE).exists()  # released: the next client may open it
    session = RegistrationSession.open(folder, device="cpu")
    assert [record.kind for record in session.history] == ["general"]
