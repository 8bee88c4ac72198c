"""Image input in every supported format keeps values and geometry; fields keep their convention."""

import numpy as np
import pytest
import SimpleITK as sitk

from rso.errors import InputError
from rso.core.imageio import read_displacement_field, read_image, write_displacement_field


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
