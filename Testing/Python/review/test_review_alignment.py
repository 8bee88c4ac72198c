"""The review command's pair inputs: a DICOM folder with several series is refused in one line that lists
them, ``--fixed-series``/``--moving-series`` pick one, ``--initial-transform``/``--fit-mask`` become
the registration's nodes, written for the worker as they were given, and the images keep their own pixel
type."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip(
    "trame_slicer", reason="the review app needs the 'review' extra (pip install -e '.[review]')"
)

from review_browser import free_port  # noqa: E402

SHIFT_LPS = (4.0, -2.0, 5.0)


def dicom_helpers():
    """Testing/Python/core/test_dicom.py: how a folder of two series (two phases of one study) is written."""
    path = Path(__file__).resolve().parents[1] / "core" / "test_dicom.py"
    spec = importlib.util.spec_from_file_location("review_dicom_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def two_series(tmp_path):
    """(folder, {UID: image written}, helpers): series index 0 is the second phase (series number 1)."""
    helpers = dicom_helpers()
    folder = tmp_path / "phases"
    folder.mkdir()
    return folder, helpers.write_two_series(folder), helpers


def review_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rso.cli", "review", "--port", str(free_port()), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_folder_of_several_series_is_refused_in_one_line(two_series):
    folder, images, _ = two_series
    done = review_command("--fixed", str(folder), "--moving", str(folder), "--fixed-series", "0")
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rso-registration: error: moving image folder") and "holds 2 DICOM series" in last
    assert all(uid in last for uid in images) and "--moving-series" in last
    assert "Traceback" not in done.stderr and "Review page" not in done.stdout  # refused before serving


def test_an_initial_transform_and_a_prealignment_are_refused_together(tmp_path):
    done = review_command(
        "--fixed", "f.nii.gz", "--moving", "m.nii.gz", "--initial-transform", "t.tfm", "--prealign", "rigid"
    )
    assert done.returncode == 2 and "not allowed with argument" in done.stderr.strip().splitlines()[-1]


def controller_for(tmp_path, *arguments: str):
    """The review controller for ``review ARGUMENTS`` (the command line's own parsing), not started."""
    from trame_slicer.core import SlicerApp

    from rso.cli import build_parser
    from rso.cli.review import review_options
    from RSORegistrationLib.backends import InProcessBackend
    from RSORegistrationReview.controller import ReviewController

    args = build_parser().parse_args(["review", *arguments, "--device", "cpu", "--channels", "4,8,16,32,64"])
    return ReviewController(SlicerApp(), review_options(args), InProcessBackend, cache_dir=tmp_path / "cache")


def test_the_series_asked_for_are_read_and_the_alignment_inputs_become_nodes(two_series, tmp_path):
    from rso.core.dicom import list_series
    from RSORegistrationLib.session_setup import open_arguments
    from RSORegistrationLib.volumes import array_from_volume

    folder, images, helpers = two_series
    listed = list_series(folder)
    transform = tmp_path / "t0.tfm"
    sitk.WriteTransform(sitk.TranslationTransform(3, SHIFT_LPS), str(transform))
    fixed_image = images[listed[0].uid]
    inside = sitk.GetImageFromArray((sitk.GetArrayFromImage(fixed_image) > 0).astype(np.uint8))
    inside.CopyInformation(fixed_image)
    sitk.WriteImage(inside, str(tmp_path / "mask.nrrd"))
    arguments = ["--fixed", str(folder), "--fixed-series", listed[0].uid, "--moving", str(folder)]
    controller = controller_for(
        tmp_path,
        *arguments,
        "--moving-series",
        "1",
        "--initial-transform",
        str(transform),
        "--fit-mask",
        str(tmp_path / "mask.nrrd"),
    )
    try:
        controller.start()
        inputs, params = controller.inputs, controller.logic.parameters()
        assert helpers.same_image(sitk.GetImageFromArray(array_from_volume(inputs.fixed)), fixed_image)
        assert helpers.same_image(
            sitk.GetImageFromArray(array_from_volume(inputs.moving)), images[listed[1].uid]
        )
        assert params.initialTransform is inputs.initial_transform and params.fitMask is inputs.fit_mask
        args = open_arguments(params, tmp_path / "staging")  # what the worker's open is given
        point = np.array([1.0, 2.0, 3.0])
        written = sitk.ReadTransform(args["initial_transform"])
        np.testing.assert_allclose(written.TransformPoint(point.tolist()), point + SHIFT_LPS, atol=1e-9)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(args["fit_mask"])), sitk.GetArrayFromImage(inside)
        )
        assert args["prealign"] is None
    finally:
        controller.close()


def test_a_missing_initial_transform_is_one_line_and_adds_no_nodes(two_series, tmp_path):
    from rso.errors import InputError

    folder, _, _ = two_series
    series = ["--fixed", str(folder), "--fixed-series", "0", "--moving", str(folder), "--moving-series", "1"]
    controller = controller_for(tmp_path, *series, "--initial-transform", str(tmp_path / "absent.tfm"))
    try:
        with pytest.raises(InputError, match="initial transform not found") as refused:
            controller.start()
        assert "\n" not in str(refused.value) and controller.inputs is None
        assert controller.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == 0  # the volumes read are gone
    finally:
        controller.close()


def test_the_pair_keeps_its_own_pixel_type_and_is_still_checked(tmp_path):
    """An int16 CT becomes an int16 node, as in the Slicer module (a float32 copy doubles its memory); a
    constant image is still refused in one line, and leaves no node."""
    import vtk

    from rso.errors import InputError
    from RSORegistrationLib.headless import new_scene
    from RSORegistrationLib.volumes import array_from_volume
    from RSORegistrationReview.inputs import PairLoader

    rng = np.random.default_rng(0)
    hu = sitk.GetImageFromArray(rng.integers(-1000, 1500, size=(12, 16, 20), dtype=np.int16))
    hu.SetSpacing((1.5, 1.5, 2.5))
    sitk.WriteImage(hu, str(tmp_path / "fixed.nrrd"))
    sitk.WriteImage(sitk.Cast(hu, sitk.sitkFloat32), str(tmp_path / "moving.nii.gz"))
    scene = new_scene().scene
    loader = PairLoader(scene, None, {})  # reading a pair needs no logic
    inputs = loader.read(tmp_path / "fixed.nrrd", tmp_path / "moving.nii.gz", None)
    assert inputs.fixed.GetImageData().GetScalarType() == vtk.VTK_SHORT
    assert inputs.moving.GetImageData().GetScalarType() == vtk.VTK_FLOAT  # each its own type
    np.testing.assert_array_equal(array_from_volume(inputs.fixed), sitk.GetArrayFromImage(hu))
    assert inputs.moving_as_acquired.GetImageData() is inputs.moving.GetImageData()
    flat = sitk.Image(hu.GetSize(), sitk.sitkInt16) - 1000
    sitk.WriteImage(flat, str(tmp_path / "flat.nrrd"))
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")
    with pytest.raises(InputError, match="is constant") as refused:
        loader.read(tmp_path / "fixed.nrrd", tmp_path / "flat.nrrd", None)
    assert "\n" not in str(refused.value)
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == volumes
