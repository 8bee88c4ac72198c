"""Image input in every supported format keeps values and geometry; fields keep their convention;
files are written atomically with the mode the umask gives, which is never changed to read it."""

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rso.core.imageio import read_displacement_field, read_image, write_displacement_field
from rso.errors import InputError


def small_ct() -> sitk.Image:
    values = np.random.default_rng(0).integers(-1000, 1500, size=(6, 20, 24)).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, -300.0))
    return image


def write_dicom_series(image: sitk.Image, folder) -> None:
    """One file per slice with the tags a CT series needs (position, orientation, spacing, UIDs)."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(
        str(v) for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    )
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(str(v) for v in position),
            "0020|0037": orientation,
            "0018|0050": str(image.GetSpacing()[2]),
            "0028|1052": "0",
            "0028|1053": "1",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_files_keep_values_and_geometry(tmp_path, suffix):
    image = small_ct()
    sitk.WriteImage(image, str(tmp_path / f"ct{suffix}"))
    read = read_image(tmp_path / f"ct{suffix}")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-6)


def test_dicom_series_folder(tmp_path):
    image = small_ct()
    write_dicom_series(image, tmp_path)
    read = read_image(tmp_path)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-3)


def test_a_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_displacement_field_round_trip_keeps_lps_vectors(tmp_path):
    field = sitk.GetImageFromArray(np.random.default_rng(1).normal(size=(5, 6, 7, 3)), isVector=True)
    field.SetSpacing((1.5, 2.0, 2.5))
    field.SetOrigin((3.0, -4.0, 5.0))
    field.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    for name in ("field.nii.gz", "field.nrrd"):
        write_displacement_field(field, tmp_path / name)
        read = read_displacement_field(tmp_path / name)
        np.testing.assert_allclose(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(field), atol=1e-5)
        np.testing.assert_allclose(read.GetDirection(), field.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(read.GetOrigin(), field.GetOrigin(), atol=1e-5)


@pytest.fixture
def umask_027():
    """The process umask set to 0o027 for the test; ``os.umask`` itself is then monkeypatched by it."""
    real_umask = os.umask
    old = real_umask(0o027)
    yield
    real_umask(old)


def no_umask(_mask=None):
    raise AssertionError("os.umask was called: it changes the umask of every thread while it reads it")


def test_atomic_writers_give_ordinary_modes_without_touching_the_umask(tmp_path, monkeypatch, umask_027):
    from rso.core.imageio import current_umask, write_bytes_atomically, write_image

    monkeypatch.setattr(os, "umask", no_umask)
    field = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3)), isVector=True)
    written = [
        write_image(small_ct(), tmp_path / "ct.nii.gz"),
        write_displacement_field(field, tmp_path / "field.nii.gz"),  # nibabel's bytes, written atomically
        write_displacement_field(field, tmp_path / "field.nrrd"),
        write_bytes_atomically(b"{}", tmp_path / "report.json"),
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~0o027 == 0o640, path
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written)
    assert current_umask() == 0o027
    assert current_umask(str(tmp_path / "no-status-file")) == 0o027  # the probe, where /proc is absent


def test_a_simulated_case_folder_gets_the_umask_mode_without_touching_it(tmp_path, monkeypatch, umask_027):
    from rso.simulation.simulate import _make_readable

    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # private (0700), as the simulator builds a case
    monkeypatch.setattr(os, "umask", no_umask)
    _make_readable(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~0o027 == 0o750
