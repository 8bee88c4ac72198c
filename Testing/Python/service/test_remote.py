"""The remote route without SSH: a worker whose folder, environment and sessions are unrelated to
the client's, started through a plain command, so that nothing but the protocol connects them.

The transport is ``env -i ... sh -c "cd <elsewhere> && tee requests.log | rso-registration worker ..."``:
the worker gets an empty environment and another working folder, and every line the client sent
is kept, so the test can show that no client path crossed over.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import write
from transports import isolated_worker_command

from rso.core.imageio import file_sha256
from rso.core.model import ModelConfig, RegistrationNet, save_checkpoint
from rso.errors import InputError
from rso.service.client import WorkerClient, WorkerError
from rso.service.remote import download_results, engine_command, open_by_upload
from rso.service.sessions import LOCK_FILE, SessionBusy, SessionLock

TINY = dict(channels=[4, 8, 16, 32, 64], grid=[16, 32, 32], device="cpu", precision="fp32", seed=2)


def central_box_ras(path: str, half_mm: float = 25.0) -> list[float]:
    """[R1, A1, S1, R2, A2, S2]: a box around the image's centre."""
    image = sitk.ReadImage(path)
    x, y, z = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    centre = np.array([-x, -y, z])  # LPS -> RAS
    return [float(v) for v in (*(centre - half_mm), *(centre + half_mm))]


@pytest.fixture(scope="module")
def client_files(known_pair, tmp_path_factory):
    """The client's inputs, in a folder the worker is never told about."""
    folder = tmp_path_factory.mktemp("client-side")
    fixed, moving, truth = known_pair
    torch.manual_seed(0)
    checkpoint = folder / "my model.pt"
    save_checkpoint(
        RegistrationNet(ModelConfig(channels=tuple(TINY["channels"]), grid=tuple(TINY["grid"]))), checkpoint
    )
    return {
        "folder": folder,
        "fixed": write(fixed, folder / "fixed.nii.gz"),
        "model": str(checkpoint),
        "moving": write(moving, folder / "moving image.nrrd"),
        "truth": write(truth, folder / "truth.nii.gz"),
    }


@pytest.fixture(scope="module")
def far_side(tmp_path_factory):
    base = tmp_path_factory.mktemp("worker-side")
    log = base / "requests.log"
    return {"sessions": base / "sessions", "log": log, "command": isolated_worker_command(base, log)}


@pytest.fixture(scope="module")
def remote(client_files, far_side):
    with WorkerClient(command=far_side["command"]) as client:
        settings = {
            key: value for key, value in TINY.items() if key != "channels"
        }  # the uploaded model has them
        opened = open_by_upload(
            client,
            client_files["fixed"],
            client_files["moving"],
            truth=client_files["truth"],
            model=client_files["model"],
            timeout=120,
            **settings,
        )
        yield client, opened


def test_the_remote_route_carries_files_and_no_path(remote, client_files, far_side):
    client, opened = remote
    session_id = opened["session_id"]
    folder = far_side["sessions"] / session_id
    assert opened["steps"] == 0 and not opened["reopened"] and (folder / LOCK_FILE).is_file()
    assert opened["model"] == "checkpoint model.pt"  # the client's checkpoint, uploaded
    assert not (folder / "uploads").exists()  # the session keeps its own copy of each input
    client.call("general", timeout=60)
    rso = client.call("rso", box_ras=central_box_ras(client_files["fixed"]), iterations=2, timeout=120)
    assert rso["files"] == {}  # a native step: its window at most (the whole images on request)
    whole = client.call("viewer", timeout=60)
    images = ("warped", "displacement", "difference", "jacobian", "folding", "change")
    assert whole["files"] == {
        **{name: f"current/{name}.nii" for name in images},
        "quality": "current/quality.json",
    }
    assert rso["metrics"]["tre_mm"]["mean"] > 0  # the uploaded truth arrived
    exported = client.call("export", figure=False, timeout=60)
    assert exported["files"]["report"] == "export/report.json"

    out = client_files["folder"] / "results"
    local = download_results(client, {**whole["files"], "report": exported["files"]["report"]}, out)
    for name, file in {**whole["files"], "report": exported["files"]["report"]}.items():
        assert file_sha256(local[name]) == file_sha256(folder / file), name  # byte for byte
    assert json.loads(Path(local["report"]).read_text())["steps"][-1]["kind"] == "rso"
    assert sitk.ReadImage(local["warped"]).GetSize() == sitk.ReadImage(client_files["fixed"]).GetSize()

    sent = far_side["log"].read_text()
    assert str(client_files["folder"]) not in sent and "moving image" not in sent and "my model" not in sent
    commands = [json.loads(line)["cmd"] for line in sent.splitlines()]
    assert set(commands[: commands.index("open")]) == {"upload"}
    assert "fixed.nii.gz" in os.listdir(folder) and "moving.nrrd" not in os.listdir(folder)


def test_a_reconnection_reopens_by_id_and_a_second_writer_is_refused(remote, far_side):
    client, opened = remote
    session_id = opened["session_id"]
    with WorkerClient(command=far_side["command"]) as second:
        with pytest.raises(WorkerError, match=f"session {session_id} is open in another worker") as busy:
            second.call("open", session_id=session_id, timeout=120)
        assert busy.value.kind == "busy"
        before = client.call("status", timeout=30)["session"]
        client.close()  # the first connection ends: its worker lets the folder go
        deadline = time.monotonic() + 30
        while (far_side["sessions"] / session_id / LOCK_FILE).exists():
            assert time.monotonic() < deadline, "the lock was not released"
            time.sleep(0.05)
        reopened = second.call("open", session_id=session_id, timeout=120)
        assert reopened["reopened"] and reopened["history"] == before["history"]
        assert set(reopened["files"]) == {
            "warped",
            "displacement",
            "difference",
            "jacobian",
            "folding",
            "change",
            "quality",
        }


def test_open_and_download_refuse_what_the_worker_cannot_have(far_side, client_files, tmp_path):
    with WorkerClient(command=far_side["command"]) as client:
        with pytest.raises(InputError, match="open needs a folder, a session_id, or uploaded"):
            client.call("open", fixed="fixed.nii.gz", moving="moving.nii.gz", timeout=60)
        client.upload(client_files["fixed"], "fixed.nii.gz")
        with pytest.raises(InputError, match="names an uploaded file, not a path"):
            client.call("open", fixed="fixed.nii.gz", moving=client_files["moving"], timeout=60)
        with pytest.raises(InputError, match="'moving.nrrd' has not been uploaded"):
            client.call("open", fixed="fixed.nii.gz", moving="moving.nrrd", timeout=60)
        with pytest.raises(InputError, match="no session 'nothing-here'"):
            client.call("open", session_id="nothing-here", timeout=60)
        with pytest.raises(InputError, match="no session is open"):
            client.download("current/warped.nii.gz", tmp_path / "warped.nii.gz")
        assert not (tmp_path / "warped.nii.gz").exists() and list(tmp_path.iterdir()) == []
    assert not [
        p for p in far_side["sessions"].glob("*") if not (p / "session.json").exists()
    ]  # uploads dropped


def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    folder = tmp_path / "session"
    folder.mkdir()
    import socket

    (folder / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 17, "host": socket.gethostname(), "since": 0}))
    lock = SessionLock(folder).acquire()  # that pid does not exist: stale
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(SessionBusy, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        SessionLock(folder).acquire()  # a live holder (this very process) keeps it
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-machine", "since": 0}))
    with pytest.raises(SessionBusy, match="pid 1 on another-machine"):
        SessionLock(folder).acquire()  # on a shared disk a lock from elsewhere cannot be judged: it holds
    lock.release()
    assert (folder / LOCK_FILE).exists()  # not this worker's lock any more: left alone


def test_the_engine_setting_names_a_command():
    assert engine_command("local") is None
    command = engine_command("ssh:me@gpu-host")
    assert command[0] == "ssh" and command[-3:] == ["me@gpu-host", "rso-registration", "worker"]
    assert "BatchMode=yes" in command
    assert engine_command("ssh:gpu /opt/rso/bin/rso-registration worker --threads 8")[-5:] == [
        "gpu",
        "/opt/rso/bin/rso-registration",
        "worker",
        "--threads",
        "8",
    ]
    for bad in ("gpu-host", "ssh:", "ssh:-oProxyCommand=x", "tcp://gpu:1234"):
        with pytest.raises(InputError, match="engine"):
            engine_command(bad)
