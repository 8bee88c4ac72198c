"""The module's Engine setting and the inputs the engine refuses, on a real MRML scene.

The remote route runs the logic against a worker that shares no files with it (an env-cleaned
process with its own sessions folder, Testing/Python/transports.py): the volumes are uploaded,
the results downloaded into the local session folder, and Reopen resumes the remote session by
its id. SSH itself is tested in Testing/Python/service/test_ssh.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest_slicer import SMALL_GRID, TINY_CHANNELS, demo  # noqa: F401  (fixtures)
from transports import isolated_worker_command

from rso.errors import InputError
from rso.service.client import WorkerClient
from rso.service.remote import REMOTE_RECORD, RemoteWorker
from RSORegistrationLib.backends import InProcessBackend, worker_backend
from RSORegistrationLib.headless import new_scene
from RSORegistrationLib.logic import RegistrationError, RegistrationLogic
from RSORegistrationLib.parameters import RunParameters
from RSORegistrationLib.volumes import array_from_volume, volume_from_image

SETTINGS = dict(modelChannels=TINY_CHANNELS, gridShape=SMALL_GRID, device="cpu", seed=3)


def test_the_logic_runs_on_a_worker_that_shares_no_files_and_reopens_it(tmp_path, demo):
    far = tmp_path / "far-side"
    remote = lambda: RemoteWorker(WorkerClient(command=isolated_worker_command(far)))  # noqa: E731
    app = new_scene()
    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, demo.moving, "m"),
    )
    logic = RegistrationLogic(app.scene, remote, cache_dir=tmp_path / "cache")
    try:
        history = logic.run(
            fixed, moving, [demo.region_ras()], iso_iterations=1, rso_iterations=1, timeout=180, **SETTINGS
        )
        params = logic.parameters()
        warped = array_from_volume(params.warpedVolume)
    finally:
        logic.close()
    assert [r["kind"] for r in history] == ["general", "iso", "rso"]
    assert moving.GetParentTransformNode() is params.outputTransform

    local = tmp_path / "cache" / "sessions"
    mirror = next(local.glob("*/session"))
    session_id = json.loads((mirror / REMOTE_RECORD).read_text())["session_id"]
    assert not (mirror / "session.json").exists()  # nothing was computed here
    remote_folder = far / "sessions" / session_id
    assert (remote_folder / "session.json").is_file()
    downloaded = sitk.GetArrayFromImage(sitk.ReadImage(str(mirror / "current" / "warped.nii")))
    np.testing.assert_array_equal(
        downloaded, sitk.GetArrayFromImage(sitk.ReadImage(str(remote_folder / "current" / "warped.nii")))
    )

    again = RegistrationLogic(app.scene, remote, cache_dir=tmp_path / "cache")  # e.g. the next day
    try:
        again.reopen()
        assert [r["kind"] for r in again.wait(timeout=180)] == ["general", "iso", "rso"]
        np.testing.assert_allclose(array_from_volume(again.parameters().warpedVolume), warped, atol=1e-4)
    finally:
        again.close()


def test_an_8_bit_volume_is_refused_unless_allowed_and_a_constant_one_always(tmp_path, demo):
    app = new_scene()
    eight_bit = sitk.Cast(sitk.RescaleIntensity(demo.moving, 0, 255), sitk.sitkUInt8)
    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, eight_bit, "8-bit"),
    )
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path)
    try:
        with pytest.raises(RegistrationError, match="does not look like CT in Hounsfield units"):
            logic.run(fixed, moving, iso_iterations=0, timeout=120, **SETTINGS)
        assert logic.parameters().warpedVolume is None  # nothing was shown
        history = logic.run(fixed, moving, iso_iterations=0, timeout=120, allowNonCt=True, **SETTINGS)
        assert [r["kind"] for r in history] == ["general"]

        constant = volume_from_image(app.scene, sitk.Image(demo.moving) * 0, "blank")
        with pytest.raises(RegistrationError, match="is constant"):
            logic.run(fixed, constant, iso_iterations=0, timeout=120, allowNonCt=True, **SETTINGS)
    finally:
        logic.close()


def test_the_engine_setting_is_checked_and_chooses_the_backend():
    params = RunParameters(fixedVolume=object(), movingVolume=object(), engine="gpu-host")
    with pytest.raises(InputError, match="engine must be 'local' or 'ssh:DESTINATION'"):
        params.check()
    params.engine = "ssh:me@gpu-host"
    params.check()  # accepted; nothing is started by a check
    backend = worker_backend(engine="ssh:nobody@127.0.0.1 /nonexistent/rso-registration worker")
    try:
        assert isinstance(backend, RemoteWorker)
        assert backend.client.command[0] == "ssh" and "nobody@127.0.0.1" in backend.client.command
    finally:
        backend.close()
