"""The worker process and its client, with a real worker: progress, cancel, undo, bad input, crash recovery.

One worker serves the whole module (starting one costs seconds: python, torch, MONAI). A tiny
network on a 32x64x64 grid keeps each iteration short on 2 CPU cores. Every test leaves the
session as ``registered`` made it (general + ISO), so the tests do not depend on their order.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import numpy as np
import pytest
import SimpleITK as sitk

from rso.cli import worker as worker_command
from rso.core.session import RegistrationSession
from rso.errors import Cancelled, InputError
from rso.service import protocol
from rso.service.client import WorkerClient, WorkerError
from rso.simulation.phantom import phantom_pair

CHANNELS = [4, 8, 16, 32, 64]
GRID = [32, 64, 64]
GEOMETRY_ROLES = ("fixed_geometry", "moving_geometry")
ISO_ITERATIONS = 6
# RAS mm around the nodule of the synthetic pair, where its motion is largest.
NODULE_BOX_RAS = phantom_pair().region_ras()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, str]:
    """fixed, moving and the exact fixed -> moving truth as .nii.gz files (fixed = moving warped by truth)."""
    folder = tmp_path_factory.mktemp("pair")
    demo = phantom_pair()
    fixed, moving, truth = demo.fixed, demo.moving, demo.truth
    paths = {
        "fixed": folder / "fixed.nii.gz",
        "moving": folder / "moving.nii.gz",
        "truth": folder / "truth.nii.gz",
    }
    for name, image in (("fixed", fixed), ("moving", moving), ("truth", truth)):
        sitk.WriteImage(image, str(paths[name]))
    return {name: str(path) for name, path in paths.items()}


# ------------------------------------------------------------------------------ the worker
@pytest.fixture(scope="module")
def client():
    with WorkerClient(extra_args=["--threads", "2"]) as worker_client:
        yield worker_client


@pytest.fixture(scope="module")
def registered(client, pair, tmp_path_factory) -> dict:
    """open -> general -> ISO, with every message recorded; the state the other tests start from."""
    folder = tmp_path_factory.mktemp("work") / "session"
    # fp32: the tiny network can diverge in bf16, and the repeated step would restart the progress
    # stream that this test checks; the bf16 fallback has its own tests (test_session.py).
    opened = client.call(
        "open",
        **pair,
        folder=str(folder),
        channels=CHANNELS,
        grid=GRID,
        device="cpu",
        seed=1,
        precision="fp32",
        timeout=120,
    )
    general = client.call("general", timeout=60)
    progress: list[dict] = []
    # ISO's guard off: its field is kept, so that the files after it show the step
    iso = client.call("iso", iterations=ISO_ITERATIONS, guard=False, on_progress=progress.append, timeout=120)
    return {
        "folder": folder,
        "opened": opened,
        "general": general,
        "iso": iso,
        "progress": progress,
        "field": field_of(folder),
        "displacement": displacement_file(folder),
    }


def field_of(folder) -> np.ndarray:
    """The session's current field as another process reads it from its folder."""
    return RegistrationSession.open(folder, device="cpu").field_voxels.copy()


def displacement_file(folder) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "current" / "displacement.nii.gz")))


def wait_for_progress(client: WorkerClient, request_id: int, count: int, timeout: float = 60) -> list[dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only {len(seen)} progress messages in {timeout} s"
        for message in client.poll():
            if message.get("id") == request_id:
                assert message["event"] == "progress", message
                seen.append(message)
        time.sleep(0.02)
    return seen


# ------------------------------------------------------------------------------ the tests
def test_open_general_iso_stream_progress_and_write_current_results(client, registered):
    assert client.ready["event"] == "ready" and client.ready["pid"] == client.pid
    opened = registered["opened"]
    assert opened["steps"] == 0 and not opened["reopened"]
    assert opened["grid"]["shape"] == GRID and opened["model"] == "untrained network"

    general = registered["general"]
    assert general["record"]["kind"] == "general" and general["steps"] == 1
    for name in ("warped", "displacement", "difference", "jacobian", "folding", "change", "quality"):
        assert os.path.isfile(general["paths"][name])
    assert general["metrics"]["tre_mm"]["mean"] > 0  # the truth field came through

    iso, progress = registered["iso"], registered["progress"]
    assert iso["record"]["kind"] == "iso" and len(iso["record"]["loss"]) == ISO_ITERATIONS
    assert iso["metrics"]["tre_mm"]["mean"] < general["metrics"]["tre_mm"]["mean"]
    iterations = [m["iteration"] for m in progress]
    assert len(progress) >= 2 and iterations == sorted(set(iterations)) and iterations[-1] == ISO_ITERATIONS
    assert all(m["step"] == "iso" and m["iterations"] == ISO_ITERATIONS and m["eta"] >= 0 for m in progress)
    assert progress[-1]["eta"] == 0 and progress[-1]["loss"] == pytest.approx(iso["record"]["loss"][-1])
    assert [r["kind"] for r in iso["history"]] == ["general", "iso"]


def test_rso_streams_progress_and_undo_restores_the_field_bit_for_bit(client, registered):
    progress: list[dict] = []
    rso = client.call(
        "rso",
        box_ras=NODULE_BOX_RAS,
        iterations=4,
        mode="crop",
        compose="local",
        on_progress=progress.append,
        timeout=120,
    )
    assert rso["record"]["kind"] == "rso" and rso["steps"] == 3 and len(rso["record"]["loss"]) == 4
    assert rso["metrics"]["rmse_hu_box"] is not None and rso["record"]["box_ras"] is not None
    assert progress and all(m["step"] == "rso" for m in progress) and progress[-1]["iteration"] == 4
    assert not np.array_equal(field_of(registered["folder"]), registered["field"])

    undo = client.call("undo", timeout=60)
    assert undo["undone"] and undo["record"]["kind"] == "rso" and undo["steps"] == 2
    np.testing.assert_array_equal(field_of(registered["folder"]), registered["field"])
    np.testing.assert_array_equal(displacement_file(registered["folder"]), registered["displacement"])


def test_cancel_mid_rso_leaves_the_session_unchanged(client, registered):
    folder = registered["folder"]
    before = client.call("status", timeout=30)["session"]
    files_before = {name: (folder / "current" / name).read_bytes() for name in os.listdir(folder / "current")}

    rso_id = client.request("rso", box_ras=NODULE_BOX_RAS, iterations=2000, mode="crop")
    progress = wait_for_progress(client, rso_id, 2)
    busy_id = client.request("iso", iterations=1)  # one step at a time
    with pytest.raises(WorkerError, match="busy with rso") as busy:
        client.wait(busy_id, timeout=30)
    assert busy.value.kind == "busy"
    running = client.call("status", timeout=30)["running"]
    assert running == {"id": rso_id, "cmd": "rso"}
    client.cancel()
    with pytest.raises(Cancelled, match="unchanged"):
        client.wait(rso_id, timeout=60)

    assert progress[0]["iteration"] < progress[1]["iteration"] < 2000
    after = client.call("status", timeout=30)
    assert after["running"] is None and after["session"] == before
    assert {
        name: (folder / "current" / name).read_bytes() for name in os.listdir(folder / "current")
    } == files_before
    np.testing.assert_array_equal(field_of(folder), registered["field"])


def test_bad_input_is_a_clear_input_error_and_the_worker_keeps_serving(client, registered, tmp_path):
    with pytest.raises(InputError, match="lies outside the image"):
        client.call("rso", box_ras=[300, 300, 300, 350, 350, 350], iterations=3, timeout=30)
    with pytest.raises(InputError, match="mode must be one of"):
        client.call("rso", box_ras=NODULE_BOX_RAS, mode="fast", timeout=30)
    with pytest.raises(InputError, match="missing.nii.gz"):  # a failed open keeps the open session
        client.call(
            "open",
            fixed=str(tmp_path / "missing.nii.gz"),
            moving=str(tmp_path / "missing.nii.gz"),
            folder=str(tmp_path / "other"),
            timeout=30,
        )
    with pytest.raises(InputError, match="iterations must be a whole number"):  # checked in the client
        client.request("iso", iterations="five")
    # Lines the client would never send, straight to the worker: each gets an input error with its id.
    client._conn.send({"id": 77, "cmd": "fly", "args": {}})
    client._conn.send({"id": 78, "cmd": "iso", "args": {"iterations": -1}})
    with pytest.raises(InputError, match="unknown command 'fly'"):
        client.wait(77, timeout=30)
    with pytest.raises(InputError, match="iterations must be a whole number >= 0"):
        client.wait(78, timeout=30)
    status = client.call("status", timeout=30)
    assert status["session"]["steps"] == 2 and status["session"]["folder"] == str(registered["folder"])
    assert client.stray_stdout == []  # nothing but protocol lines on the worker's stdout


def test_export_writes_results_and_an_internal_error_keeps_the_worker_serving(client, registered, tmp_path):
    paths = client.call("export", out=str(tmp_path / "export"), figure=False, timeout=60)["paths"]
    assert {"warped", "displacement", "difference", "report"} <= set(paths)
    assert all(os.path.isfile(path) for path in paths.values())

    (tmp_path / "a-file").write_text("")
    with pytest.raises(
        WorkerError
    ) as error:  # not an InputError: an unexpected OSError, reported with its traceback
        client.call("export", out=str(tmp_path / "a-file" / "out"), figure=False, timeout=60)
    assert error.value.kind == "internal" and "Error" in str(error.value).splitlines()[0]
    assert "Traceback" in error.value.stderr
    assert client.call("status", timeout=30)["session"]["steps"] == 2


def test_labels_are_carried_onto_the_fixed_image_with_names_and_overlap(client, registered, pair, tmp_path):
    from rso.core.labels import Label, color_table_text, propagate
    from rso.simulation.phantom import LABELS

    demo = phantom_pair()
    sitk.WriteImage(demo.moving_labels, str(tmp_path / "labels.nrrd"))
    sitk.WriteImage(demo.fixed_labels, str(tmp_path / "truth_labels.nii.gz"))
    table = {value: Label(value, name.replace(" ", "_"), color) for value, (name, color) in LABELS.items()}
    (tmp_path / "colors.txt").write_text(color_table_text(table))
    result = client.call(
        "labels",
        labels=str(tmp_path / "labels.nrrd"),
        colors=str(tmp_path / "colors.txt"),
        reference=str(tmp_path / "truth_labels.nii.gz"),
        timeout=60,
    )
    current = registered["folder"] / "current"
    assert result["paths"]["labels_warped"] == str(current / "labels_warped.nii.gz")
    report = result["report"]
    assert [row["name"] for row in report["labels"]] == ["right_lung", "left_lung", "nodule", "spine"]
    rows = {row["name"]: row for row in report["labels"]}
    assert rows["right_lung"]["dice"] > 0.8 and rows["nodule"]["volume_ml_fixed"] > 0
    assert report["outside_field_of_view"] == []
    # The worker's labels are the engine's, through the field the viewer got.
    field = sitk.ReadImage(str(current / "displacement.nii.gz"))
    expected = propagate(demo.moving_labels, field, sitk.ReadImage(pair["fixed"]))
    carried = sitk.GetArrayFromImage(sitk.ReadImage(result["paths"]["labels_warped"]))
    assert (
        carried != sitk.GetArrayViewFromImage(expected)
    ).mean() < 1e-4  # the file's float32 vs float64 field
    with pytest.raises(InputError, match="non-integer values"):
        client.call("labels", labels=pair["moving"], timeout=60)
    assert client.call("status", timeout=30)["session"]["steps"] == 2


def test_killed_worker_is_reported_and_the_session_resumes_after_restart(client, registered):
    folder = registered["folder"]
    os.kill(client.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    died = []
    while not died:
        assert time.monotonic() < deadline, "no died message"
        died = [m for m in client.poll() if m["event"] == "died"]
        time.sleep(0.02)
    assert died[0]["returncode"] == -signal.SIGKILL
    assert "rso.worker" in died[0]["stderr"]  # the worker's log lines, for the user to read
    assert not client.alive
    with pytest.raises(WorkerError, match="ended") as error:
        client.call("status", timeout=10)
    assert error.value.kind == "died" and "rso.worker" in str(error.value)

    client.restart()
    reopened = client.call("open", folder=str(folder), device="cpu", timeout=120)
    assert reopened["reopened"] and reopened["steps"] == 2
    assert [r["kind"] for r in reopened["history"]] == ["general", "iso"]
    assert set(reopened["paths"]) == {
        "warped",
        "displacement",
        "difference",
        "jacobian",
        "folding",
        "change",
        "quality",
    }
    np.testing.assert_array_equal(field_of(folder), registered["field"])
    np.testing.assert_array_equal(displacement_file(folder), registered["displacement"])
    assert client.call("status", timeout=30)["session"]["steps"] == 2


# ------------------------------------------------------------------------------ without a process
def test_protocol_checks_requests_and_encodes_plain_json():
    request = protocol.parse_request(
        '{"id": 3, "cmd": "rso", "args": {"box_lps": [1, 2, 3, 4, 5, 6], "mode": null}}'
    )
    assert request == protocol.Request(3, "rso", {"box_lps": [1, 2, 3, 4, 5, 6]})
    for line, message in [
        ("not json", "not a JSON line"),
        ('{"cmd": "general"}', "integer id"),
        ('{"id": 1, "cmd": "rso", "args": {}}', "exactly one of box_ras"),
        ('{"id": 1, "cmd": "iso", "args": {"iterations": 2.5}}', "whole number"),
        ('{"id": 1, "cmd": "iso", "args": {"iters": 2}}', "unknown argument 'iters'"),
        ('{"id": 1, "cmd": "download", "args": {}}', "missing argument file"),
    ]:
        with pytest.raises(protocol.ProtocolError, match=message):
            protocol.parse_request(line)
    line = protocol.encode({"a": np.float32(1.5), "b": (1, np.int64(2)), "c": float("nan")})
    assert line == '{"a":1.5,"b":[1,2],"c":null}'
    assert protocol.error(1, "input", "two\nlines")["message"] == "two lines"


def test_progress_throttle_lets_through_five_a_second_and_always_the_last():
    now = [0.0]
    throttle = protocol.ProgressThrottle(clock=lambda: now[0])
    passed = []
    for iteration in range(1, 101):  # 100 iterations in 1 s
        now[0] = iteration * 0.01
        if throttle(iteration, 100):
            passed.append(iteration)
    assert passed[0] == 1 and passed[-1] == 100 and len(passed) <= 7


def test_worker_subcommand_registers():
    parser = argparse.ArgumentParser()
    worker_command.add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["worker", "--threads", "1"])
    assert args.func is worker_command.run and args.threads == 1


def open_with_geometry(own: WorkerClient, pair: dict, views: dict, tmp_path) -> dict:
    """``open`` on the pair with the geometry files ``views`` (role -> path), in fp32 on the CPU."""
    return own.call(
        "open",
        **pair,
        **{k: str(v) for k, v in views.items()},
        folder=str(tmp_path / "session"),
        channels=CHANNELS,
        grid=GRID,
        device="cpu",
        precision="fp32",
        timeout=120,
    )


def test_open_with_projection_geometry_makes_iso_and_native_rso_compare_artefact_matched_images(
    pair, tmp_path
):
    """The geometry files travel through open (a worker of its own: the module's session stays as it was)."""
    import json

    from rso.core.projection.geometry import write_geometry
    from rso.simulation.cbct import CBCTParams, phase_geometry

    views = {}
    for role, phase in zip(GEOMETRY_ROLES, (0, 5)):
        geometry = phase_geometry(phase, 10, CBCTParams(projections=250))
        views[role] = write_geometry(geometry, tmp_path / f"{role}.xml")
    with WorkerClient(extra_args=["--threads", "2"]) as own:
        open_with_geometry(own, pair, views, tmp_path)
        iso = own.call("iso", iterations=2, timeout=120)
        raw_iso = own.call("iso", iterations=2, match_artefacts=False, timeout=120)
        rso = own.call("rso", box_ras=NODULE_BOX_RAS, iterations=3, min_gain=0.0, timeout=120)
    assert (
        iso["record"]["params"]["artefacts_matched"] is True
        and raw_iso["record"]["params"]["artefacts_matched"] is False
    )
    assert (
        rso["record"]["params"]["artefacts_matched"] is True and rso["record"]["params"]["mode"] == "native"
    )
    manifest = json.loads((tmp_path / "session" / "session.json").read_text())
    assert [len(g["gantry_deg"]) for g in manifest["geometry"]] == [25, 25]


def test_open_with_tv_phases_geometry_says_so_and_native_rso_follows_the_scan_rule(pair, tmp_path):
    """TV phases' geometry files through open: the status line names the scan, and on a half fan the box
    step is declined with its reason unless the rule is turned off (rso.core.projection.scan)."""
    import numpy as np

    from rso.core.projection.geometry import ProjectionGeometry, write_geometry
    from rso.core.projection.scan import HALF_FAN_TV_DECLINE

    angles = (np.arange(12)[:, None] * 30.0 + np.arange(3)[None, :]).ravel()
    geometry = ProjectionGeometry.circular(1000.0, 1500.0, angles, offset_x=90.0)
    views = {role: write_geometry(geometry, tmp_path / f"{role}.xml", "tv") for role in GEOMETRY_ROLES}
    with WorkerClient(extra_args=["--threads", "2"]) as own:
        opened = open_with_geometry(own, pair, views, tmp_path)
        declined = own.call("rso", box_ras=NODULE_BOX_RAS, iterations=3, timeout=120)
        ruled_out = own.call("rso", box_ras=NODULE_BOX_RAS, iterations=3, scan_rule=False, timeout=120)
    assert opened["artefact_matching"] == (
        "artefact matching off: the phases are TV reconstructions of a half-fan scan "
        "(ISO keeps the field; native RSO declines box steps)"
    )
    assert declined["record"]["declined"] == HALF_FAN_TV_DECLINE and declined["history"] == opened["history"]
    assert "scan" not in ruled_out["record"]["params"] and ruled_out["record"]["loss"]


def test_a_native_step_writes_only_its_window_and_the_whole_images_follow_when_asked(client, registered):
    """After a native step the reply names one window of each viewer image; pasted into the images
    before the step it gives exactly the whole images the ``viewer`` command then writes."""
    from rso.core.results import FILES

    current = registered["folder"] / "current"
    names = ("warped", "difference", "displacement", "jacobian", "folding", "change")
    before = {n: sitk.GetArrayFromImage(sitk.ReadImage(str(current / FILES[n]))) for n in names}
    rso = client.call("rso", box_ras=NODULE_BOX_RAS, iterations=3, min_gain=0.0, timeout=120)
    assert rso["record"]["declined"] is None and rso["paths"] == {} and rso["files"] == {}
    patch = rso["patch"]
    assert patch["clear"] == ["change"] and set(patch["paths"]) == set(names)
    assert patch["files"]["warped"] == "current/patch-warped.nrrd"
    window = tuple(slice(a, b) for a, b in patch["window"])
    assert 0 < np.prod([b - a for a, b in patch["window"]]) < 0.5 * before["warped"].size
    whole = client.call("viewer", timeout=120)
    for name in names:
        pasted = np.zeros_like(before[name]) if name in patch["clear"] else before[name].copy()
        pasted[window] = sitk.GetArrayFromImage(sitk.ReadImage(patch["paths"][name]))
        after = sitk.GetArrayFromImage(sitk.ReadImage(whole["paths"][name]))
        np.testing.assert_allclose(pasted, after, atol=1e-4, err_msg=name)
    assert np.abs(pasted).max() > 0  # the change map: the step moved the box
    assert whole["files"]["warped"] == "current/warped.nii"

    undo = client.call("undo", timeout=60)  # leave the session as ``registered`` made it
    assert undo["undone"] and "patch" not in undo
    np.testing.assert_array_equal(displacement_file(registered["folder"]), registered["displacement"])
