"""The remote engine through a real OpenSSH server on 127.0.0.1: the full client loop, a dropped
connection mid-RSO, and a second client refused with "busy".

The server runs with throw-away keys in a temporary folder (Testing/Python/transports.py); the
remote command is this venv's ``rso-registration worker`` with a sessions folder of its own. The
reference is the same steps through a local worker that reads the inputs by path: in fp32 with the
same seed, the remote route must give the same warped image, voxel for voxel.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write
from transports import SshServer, sshd_missing_reason, worker_program

from rso.service.client import WorkerClient, WorkerError
from rso.service.remote import download_results, open_by_upload

SETTINGS = dict(channels=[4, 8, 16, 32, 64], grid=[16, 32, 32], device="cpu", precision="fp32", seed=5)
ISO, RSO = 3, 3


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ssh_worker(sshd, tmp_path_factory) -> list[str]:
    """The command that starts a worker on the far side of the SSH server."""
    return sshd.command(worker_program(tmp_path_factory.mktemp("remote-sessions")))


@pytest.fixture(scope="module")
def pair_files(known_pair, tmp_path_factory):
    folder = tmp_path_factory.mktemp("client-inputs")
    fixed, moving, truth = known_pair
    return {
        "fixed": write(fixed, folder / "fixed.nii.gz"),
        "moving": write(moving, folder / "moving.nii.gz"),
        "truth": write(truth, folder / "truth.nii.gz"),
    }


def box_around_centre(path: str, half_mm: float = 20.0) -> list[float]:
    image = sitk.ReadImage(path)
    x, y, z = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    return [-x - half_mm, -y - half_mm, z - half_mm, -x + half_mm, -y + half_mm, z + half_mm]


def warped(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def local_run(pair_files, tmp_path_factory) -> dict:
    """general -> ISO -> RSO -> undo through a local worker, by path: the reference."""
    folder = tmp_path_factory.mktemp("local") / "session"
    with WorkerClient(extra_args=["--threads", "2"]) as local:
        local.call("open", **pair_files, folder=str(folder), **SETTINGS, timeout=120)
        local.call("general", timeout=60)
        iso = local.call("iso", iterations=ISO, timeout=120)
        rso = local.call("rso", box_ras=box_around_centre(pair_files["fixed"]), iterations=RSO, timeout=120)
        after_rso = warped(local.call("viewer", timeout=60)["paths"]["warped"])  # a native step: its window
        undo = local.call("undo", timeout=60)
        return {
            "iso": iso,
            "rso": rso,
            "after_rso": after_rso,
            "after_undo": warped(undo["paths"]["warped"]),
            "displacement": warped(undo["paths"]["displacement"]),
        }


@pytest.fixture(scope="module")
def remote(ssh_worker, pair_files):
    """A session opened by upload over SSH, after general and ISO."""
    client = WorkerClient(command=ssh_worker)
    opened = open_by_upload(
        client, pair_files["fixed"], pair_files["moving"], truth=pair_files["truth"], timeout=120, **SETTINGS
    )
    client.call("general", timeout=60)
    iso = client.call("iso", iterations=ISO, timeout=120)
    yield {"client": client, "session_id": opened["session_id"], "iso": iso}
    client.close()


def test_full_loop_over_ssh_reproduces_a_local_run(remote, local_run, pair_files, tmp_path):
    client = remote["client"]
    assert remote["iso"]["record"]["loss"] == local_run["iso"]["record"]["loss"]
    rso = client.call("rso", box_ras=box_around_centre(pair_files["fixed"]), iterations=RSO, timeout=120)
    assert rso["record"]["loss"] == local_run["rso"]["record"]["loss"]
    assert rso["metrics"] == local_run["rso"]["metrics"]
    assert rso["files"] == {} and rso["patch"]["files"]["warped"] == "current/patch-warped.nrrd"
    window = download_results(client, rso["patch"]["files"], tmp_path / "window")
    assert set(window) == set(rso["patch"]["files"]) and os.path.getsize(window["warped"]) > 0
    whole = client.call("viewer", timeout=60)
    after_rso = download_results(client, whole["files"], tmp_path / "after-rso")
    np.testing.assert_array_equal(warped(after_rso["warped"]), local_run["after_rso"])  # bit for bit, fp32
    undo = client.call("undo", timeout=60)
    assert undo["undone"] and [r["kind"] for r in undo["history"]] == ["general", "iso"]
    after_undo = download_results(client, undo["files"], tmp_path / "after-undo")
    np.testing.assert_array_equal(warped(after_undo["warped"]), local_run["after_undo"])
    assert not np.array_equal(local_run["after_rso"], local_run["after_undo"])  # RSO changed something


def test_a_second_client_is_refused_with_busy(remote, ssh_worker):
    with (
        WorkerClient(command=ssh_worker) as second,
        pytest.raises(WorkerError, match="is open in another worker") as refused,
    ):
        second.call("open", session_id=remote["session_id"], timeout=120)
    assert refused.value.kind == "busy"
    assert remote["client"].call("status", timeout=30)["session"]["steps"] == 2  # the first keeps its session


def test_a_connection_dropped_mid_rso_resumes_at_the_last_accepted_step(
    remote, ssh_worker, pair_files, local_run, tmp_path
):
    client = remote["client"]
    request_id = client.request("rso", box_ras=box_around_centre(pair_files["fixed"]), iterations=100000)
    deadline = time.monotonic() + 120
    while not any(m.get("id") == request_id and m.get("event") == "progress" for m in client.poll()):
        assert time.monotonic() < deadline, "RSO never started"
        time.sleep(0.05)
    os.kill(client.pid, signal.SIGKILL)  # the ssh client dies: the connection drops, mid-step
    with pytest.raises(WorkerError) as dropped:
        client.wait(request_id, timeout=60)
    assert dropped.value.kind == "died"

    with WorkerClient(command=ssh_worker) as again:
        deadline = time.monotonic() + 60
        while True:  # the old worker is still stopping its step (and holds the lock) for a moment
            try:
                reopened = again.call("open", session_id=remote["session_id"], timeout=120)
                break
            except WorkerError as exc:
                assert exc.kind == "busy" and time.monotonic() < deadline, exc
                time.sleep(0.2)
        assert reopened["reopened"] and [r["kind"] for r in reopened["history"]] == ["general", "iso"]
        current = download_results(again, reopened["files"], tmp_path)
        np.testing.assert_array_equal(warped(current["displacement"]), local_run["displacement"])
        np.testing.assert_array_equal(warped(current["warped"]), local_run["after_undo"])
