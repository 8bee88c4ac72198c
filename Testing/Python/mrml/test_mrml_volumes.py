"""Volume nodes <-> SimpleITK with full geometry, and ROI nodes -> model-grid boxes (real MRML)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from conftest_slicer import app, oblique_image, roi_node  # noqa: F401  (fixtures)

from rso.core.geometry import ModelGrid, lps_to_ras, ras_to_lps
from rso.errors import InputError
from RSORegistrationLib.roi import box_argument, box_from_roi, roi_corners_ras, roi_ras_box
from RSORegistrationLib.volumes import image_from_volume, read_volume, volume_from_image, write_volume


def assert_same_geometry(a: sitk.Image, b: sitk.Image, atol=1e-9):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=atol)


def test_volume_round_trip_keeps_voxels_spacing_origin_and_oblique_direction(app):
    image = oblique_image()
    node = volume_from_image(app.scene, image, "oblique")
    back = image_from_volume(node)
    assert_same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    # The node's RAS geometry is the LPS one with x and y negated: a voxel lands at the same place.
    index = (3, 7, 5)
    lps = np.array(image.TransformIndexToPhysicalPoint(index))
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = np.array(matrix.MultiplyPoint([*index, 1.0])[:3])
    np.testing.assert_allclose(ras, lps_to_ras(lps), atol=1e-9)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_slicer_storage_node_files_read_back_with_the_same_geometry(app, tmp_path, suffix):
    """What the logic writes for the worker (Slicer's own writer) is what SimpleITK reads."""
    image = oblique_image(seed=1)
    node = volume_from_image(app.scene, image, "input")
    path = write_volume(node, tmp_path / f"input{suffix}")
    on_disk = sitk.ReadImage(str(path))
    assert_same_geometry(on_disk, image, atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(on_disk), sitk.GetArrayViewFromImage(image))
    assert node.GetStorageNode() is None  # writing a copy never re-points the user's node
    again = read_volume(app.scene, path, "again")
    assert_same_geometry(image_from_volume(again), image, atol=1e-6)


def test_slicer_volumes_logic_reads_engine_files_with_the_same_geometry(app, tmp_path):
    image = oblique_image(seed=2)
    sitk.WriteImage(image, str(tmp_path / "engine.nii.gz"))
    node = app.volumes_logic.AddArchetypeVolume(str(tmp_path / "engine.nii.gz"), "engine")
    assert_same_geometry(image_from_volume(node), image, atol=1e-5)


def brute_force_box(grid: ModelGrid, ras_box) -> tuple[tuple, tuple]:
    """All model-grid voxel centres inside the RAS box, tested one by one."""
    low, high = np.array(ras_box[:3]), np.array(ras_box[3:])
    inside = []
    for index in itertools.product(*[range(n) for n in grid.shape]):
        ras = lps_to_ras(grid.index_to_lps_points(np.array(index, float)))
        if np.all(ras >= low - 1e-6) and np.all(ras <= high + 1e-6):
            inside.append(index)
    inside = np.array(inside)
    return tuple(inside.min(axis=0).tolist()), tuple((inside.max(axis=0) + 1).tolist())


def axis_aligned_image() -> sitk.Image:
    image = sitk.Image([32, 32, 16], sitk.sitkFloat32)
    image.SetSpacing((2.0, 2.5, 4.0))
    image.SetOrigin((-30.0, 15.0, -20.0))
    return image


@pytest.mark.parametrize(
    "ras_box",
    [
        [-10.0, -50.0, -12.0, 12.3, -31.0, 20.0],
        [-40.0, -80.0, -30.0, 35.0, 10.0, 50.0],  # larger than the image: clipped
        "one voxel",  # a box just around one voxel centre
    ],
)
def test_roi_box_equals_a_brute_force_voxel_centre_test(app, ras_box):
    grid = ModelGrid.covering(axis_aligned_image(), (16, 16, 16))
    if ras_box == "one voxel":
        centre = lps_to_ras(grid.index_to_lps_points(np.array([5.0, 9.0, 3.0])))
        ras_box = [*(centre - 0.7), *(centre + 0.7)]
    roi = roi_node(app.scene, ras_box)
    np.testing.assert_allclose(roi_ras_box(roi), ras_box, atol=1e-5)  # control points are float32
    box = box_from_roi(grid, roi)
    assert (box.voxels.lo, box.voxels.hi) == brute_force_box(grid, roi_ras_box(roi))
    np.testing.assert_allclose(
        box.lps_min, np.minimum(ras_to_lps(ras_box[:3]), ras_to_lps(ras_box[3:])), atol=1e-9
    )


def test_rotated_roi_uses_the_box_around_its_oriented_corners(app):
    grid = ModelGrid.covering(axis_aligned_image(), (16, 16, 16))
    roi = roi_node(app.scene, [-10.0, -50.0, -10.0, 10.0, -30.0, 10.0])
    rotation = vtk.vtkTransform()
    rotation.Translate(0.0, -40.0, 0.0)  # the ROI's centre lives in the same matrix
    rotation.RotateZ(30.0)
    rotation.RotateX(20.0)
    orientation = rotation.GetMatrix()
    matrix = np.array([[orientation.GetElement(i, j) for j in range(3)] for i in range(3)])
    roi.SetAndObserveObjectToNodeMatrix(orientation)  # what rotating the ROI in Slicer sets
    corners = roi_corners_ras(roi)
    # Brute force: the corners are centre +- half size along the rotated axes.
    centre, half = np.array([0.0, -40.0, 0.0]), np.array([10.0, 10.0, 10.0])
    expected = np.array(
        [centre + matrix @ (np.array(s) * half) for s in itertools.product((-1, 1), repeat=3)]
    )
    np.testing.assert_allclose(np.sort(corners, axis=0), np.sort(expected, axis=0), atol=1e-6)
    ras_box = roi_ras_box(roi)
    np.testing.assert_allclose(ras_box, [*expected.min(axis=0), *expected.max(axis=0)], atol=1e-6)
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)  # Slicer's own world bounds agree
    np.testing.assert_allclose(
        ras_box, [bounds[0], bounds[2], bounds[4], bounds[1], bounds[3], bounds[5]], atol=1e-6
    )
    box = box_from_roi(grid, roi)
    assert (box.voxels.lo, box.voxels.hi) == brute_force_box(grid, ras_box)


def test_roi_under_a_transform_is_taken_in_world_coordinates(app):
    roi = roi_node(app.scene, [-5.0, -45.0, -5.0, 5.0, -35.0, 5.0])
    shift = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 7.0)
    shift.SetMatrixTransformToParent(matrix)
    roi.SetAndObserveTransformNodeID(shift.GetID())
    np.testing.assert_allclose(roi_ras_box(roi), [2.0, -45.0, -5.0, 12.0, -35.0, 5.0], atol=1e-9)


def test_bad_regions_are_clear_errors(app):
    grid = ModelGrid.covering(axis_aligned_image(), (16, 16, 16))
    with pytest.raises(InputError, match="outside the image"):
        box_from_roi(grid, roi_node(app.scene, [500.0, 500.0, 500.0, 510.0, 510.0, 510.0]))
    unplaced = app.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "empty")
    with pytest.raises(InputError, match="not been placed"):
        roi_ras_box(unplaced)
    flat = roi_node(app.scene, [0.0, -40.0, 0.0, 10.0, -30.0, 0.0])
    with pytest.raises(InputError, match="zero size"):
        roi_ras_box(flat)
    with pytest.raises(InputError, match="6 numbers"):
        box_argument([1, 2, 3])
    assert box_argument([1, 2, 3, 4, 5, 6]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def _hu_image(values: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


def _colour_at(volume, hu: float) -> list[float]:
    """The RGB the volume's table gives a voxel of ``hu`` under its window (centred on zero)."""
    display = volume.GetDisplayNode()
    table = display.GetColorNode()
    count = table.GetNumberOfColors()
    position = (hu + display.GetWindow() / 2) / display.GetWindow()
    rgba = [0.0] * 4
    table.GetColor(int(np.clip(round(position * (count - 1)), 0, count - 1)), rgba)
    return rgba[:3]


def test_the_difference_overlay_keeps_noise_black_and_its_band_from_step_to_step(app):
    """Phase images of a CBCT differ by noise everywhere: the band grows to two robust spreads of the
    difference in the body, so that noise stays black and a larger difference is coloured; a clean pair
    keeps the default band; a later step keeps the volume's band."""
    from RSORegistrationLib.display import NEUTRAL_ATTRIBUTE, show_difference_style

    rng = np.random.default_rng(0)
    fixed = np.full((12, 40, 40), -1000.0)
    fixed[:, 5:35, 5:35] = 40.0  # the body; the air around it does not count
    body = fixed > -900
    noisy = np.where(body, rng.normal(0.0, 100.0, fixed.shape), rng.normal(0.0, 400.0, fixed.shape))
    fixed_node = volume_from_image(app.scene, _hu_image(fixed), "fixed")
    difference = volume_from_image(app.scene, _hu_image(noisy), "difference")
    band = show_difference_style(difference, fixed_node)
    assert band == pytest.approx(200.0, rel=0.05)  # 2 x sigma of the body's noise, not the air's
    assert float(difference.GetAttribute(NEUTRAL_ATTRIBUTE)) == pytest.approx(band, abs=0.1)
    assert _colour_at(difference, 0.9 * band) == [0.0, 0.0, 0.0]
    assert _colour_at(difference, -0.9 * band) == [0.0, 0.0, 0.0]
    assert _colour_at(difference, band + 250.0)[0] > 0.9  # red: warped brighter
    assert _colour_at(difference, -band - 250.0)[2] > 0.9  # blue: warped darker

    # The next step's difference is re-read into the same node: the band stays, even if it is cleaner.
    volume_from_image(app.scene, _hu_image(0.1 * noisy), "difference", difference)
    assert show_difference_style(difference, fixed_node) == pytest.approx(band, abs=0.1)

    clean = volume_from_image(
        app.scene, _hu_image(np.where(body, rng.normal(0, 5.0, fixed.shape), 0)), "clean"
    )
    assert show_difference_style(clean, fixed_node) == pytest.approx(32.0)
    assert clean.GetDisplayNode().GetColorNode().GetName() == "RSO difference"
    assert _colour_at(clean, 20.0) == [0.0, 0.0, 0.0] and _colour_at(clean, 300.0)[0] > 0.9


def test_the_band_of_a_large_image_comes_from_a_sample_of_it():
    """Above SPREAD_SAMPLE voxels the spread is measured on a fixed random sample: the same band every
    time, and the band of the whole."""
    from RSORegistrationLib.display import SPREAD_SAMPLE, difference_band_hu

    rng = np.random.default_rng(1)
    shape = (40, 180, 180)
    assert np.prod(shape) > SPREAD_SAMPLE
    difference = rng.normal(0.0, 80.0, shape).astype(np.float32)
    fixed = np.zeros(shape, np.int16)
    band = difference_band_hu(difference, fixed)
    assert band == pytest.approx(160.0, rel=0.02)
    assert difference_band_hu(difference, fixed) == band
