"""Geometry and metrics: the conventions everything else stands on (docs/architecture.md §3)."""

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rso.core.boxes import box_from_fixed_index, box_from_ras
from rso.core.geometry import ModelGrid, physical_bounds, ras_to_lps
from rso.core.metrics import folding, jacobian_determinant, largest_change_outside, target_registration_error
from rso.core.model import ModelConfig, RegistrationNet
from rso.errors import InputError


def oblique_image(size=(20, 24, 16), spacing=(1.5, 2.0, 3.0)) -> sitk.Image:
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.0))
    rotation = sitk.VersorTransform((0.2, 0.3, 1.0), 0.4).GetMatrix()
    image.SetDirection(rotation)
    return image


def test_model_grid_covers_the_fixed_image_box():
    image = oblique_image()
    grid = ModelGrid.covering(image, (16, 32, 32))
    lo, hi = physical_bounds(image)
    grid_lo, grid_hi = physical_bounds(grid.reference_image())
    np.testing.assert_allclose(grid_lo, lo, atol=1e-9)
    np.testing.assert_allclose(grid_hi, hi, atol=1e-9)
    assert ModelGrid.from_dict(grid.to_dict()) == grid


@pytest.mark.parametrize("stored", ["RAS", "PSL", "SLA", "LPI"])
def test_the_model_grid_lies_along_lps_however_the_file_stores_the_image(stored):
    """The same physical image stored in another voxel order (RAS, a sagittal stack, ...) gets the grid of
    its axial LPS copy: the network sees the chest as it saw its training volumes."""
    image = sitk.Image([20, 24, 16], sitk.sitkFloat32)
    image.SetSpacing((1.5, 2.0, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    expected = ModelGrid.covering(image, (16, 32, 48))
    grid = ModelGrid.covering(sitk.DICOMOrient(image, stored), (16, 32, 48))
    assert grid.shape == expected.shape and grid.direction == expected.direction == tuple(np.eye(3).ravel())
    np.testing.assert_allclose(grid.spacing, expected.spacing, atol=1e-12)
    np.testing.assert_allclose(grid.origin, expected.origin, atol=1e-9)


def test_an_oblique_model_grid_keeps_the_image_tilt_along_the_axes_nearest_lps():
    image = oblique_image()  # turned 23 degrees: its own axes lie nearest L, P and S
    grid = ModelGrid.covering(image, (16, 32, 32))
    assert grid.direction == image.GetDirection()
    turned = ModelGrid.covering(sitk.DICOMOrient(image, "SAR"), (16, 32, 32))
    np.testing.assert_allclose(turned.direction, grid.direction, atol=1e-12)
    np.testing.assert_allclose(turned.spacing, grid.spacing, atol=1e-12)
    np.testing.assert_allclose(turned.origin, grid.origin, atol=1e-9)


def test_grid_must_suit_the_unet():
    with pytest.raises(InputError, match="multiple of 16"):
        ModelGrid.covering(oblique_image(), (16, 30, 32))


def test_voxel_and_millimetre_fields_convert_both_ways():
    grid = ModelGrid.covering(oblique_image(), (16, 16, 32))
    voxels = np.random.default_rng(0).normal(size=(3, *grid.shape)).astype(np.float32)
    np.testing.assert_allclose(grid.mm_to_voxels(grid.voxels_to_mm(voxels)), voxels, atol=1e-5)
    # One voxel along x (channel 2) is one spacing step along the direction's first column.
    step = np.zeros((3, *grid.shape), np.float32)
    step[2] = 1
    expected = np.array(grid.direction).reshape(3, 3)[:, 0] * grid.spacing[0]
    np.testing.assert_allclose(grid.voxels_to_mm(step)[0, 0, 0], expected, atol=1e-6)


def test_engine_warp_equals_itk_resampling_through_the_exported_field():
    """MONAI's Warp on the model grid and ITK through the LPS-mm field sample the same points."""
    image = oblique_image(size=(32, 32, 16), spacing=(2.0, 2.5, 3.0))
    rng = np.random.default_rng(1)
    values = sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(rng.normal(size=image.GetSize()[::-1]).astype(np.float32) * 400), 3.0
    )
    values.CopyInformation(image)
    grid = ModelGrid.covering(values, (16, 32, 32))  # the same grid as the image itself
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in grid.shape], indexing="ij")
    field_voxels = np.stack([0.8 * np.sin(2 * x), 1.5 * np.cos(y + z), 2.0 * x * y]).astype(np.float32)
    net = RegistrationNet(ModelConfig(channels=(4, 8, 16, 32, 64)))
    moving = torch.from_numpy(grid.resample(values) + 1000)[None, None]
    engine = net.warp(moving, torch.from_numpy(field_voxels)[None])[0, 0].numpy() - 1000
    transform = sitk.DisplacementFieldTransform(grid.field_image(grid.voxels_to_mm(field_voxels)))
    itk = sitk.GetArrayFromImage(
        sitk.Resample(values, grid.reference_image(), transform, sitk.sitkLinear, -1000.0)
    )
    interior = (slice(3, -3),) * 3  # away from the border, where padding rules differ
    np.testing.assert_allclose(engine[interior], itk[interior], atol=0.05)


def test_ras_box_matches_brute_force_voxel_centre_test():
    image = sitk.Image([40, 30, 20], sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.5, 2.5))
    image.SetOrigin((-20.0, 15.0, -30.0))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # a flipped axis, as many scanners write
    grid = ModelGrid.covering(image, (16, 32, 48))
    ras = [41.7, -22.0, -22.0, 25.3, -40.1, -5.0]  # corners in any order
    box = box_from_ras(grid, ras)
    lps = ras_to_lps(np.reshape(ras, (2, 3)))
    lo, hi = lps.min(axis=0), lps.max(axis=0)
    centres = grid.index_to_lps_points(
        np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    )
    inside = np.all((centres >= lo) & (centres <= hi), axis=-1)
    np.testing.assert_array_equal(box.voxels.mask(grid.shape), inside)
    assert box.ras_corners == [25.3, -40.1, -22.0, 41.7, -22.0, -5.0]
    assert 0 < inside.sum() < inside.size


def test_index_box_covers_the_named_voxels():
    image = sitk.Image([64, 64, 32], sitk.sitkFloat32)
    grid = ModelGrid.covering(image, (32, 64, 64))
    box = box_from_fixed_index(grid, image, [10, 20, 5, 19, 29, 9])
    assert box.voxels.lo == (5, 20, 10) and box.voxels.hi == (10, 30, 20)


@pytest.mark.parametrize(
    "ras, message",
    [
        ([500, 500, 500, 600, 600, 600], "outside the image"),
        ([0, 0, 0, 10, 0, 10], "zero size"),
    ],
)
def test_bad_boxes_are_refused(ras, message):
    grid = ModelGrid.covering(sitk.Image([32, 32, 16], sitk.sitkFloat32), (16, 32, 32))
    with pytest.raises(InputError, match=message):
        box_from_ras(grid, ras)


def test_jacobian_of_an_affine_field_is_its_determinant():
    grid = ModelGrid.covering(oblique_image(), (16, 16, 16))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    points = grid.index_to_lps_points(index)
    matrix = np.array([[0.1, 0.05, 0], [0.0, -0.2, 0.1], [0.02, 0, 0.3]])
    field = points @ matrix.T
    det = jacobian_determinant(field, grid.index_to_lps)
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + matrix), rtol=1e-9)
    folded = folding(-3 * (points - points.mean(axis=(0, 1, 2))), grid.index_to_lps)
    assert folded["folding_fraction"] == 1.0 and folded["jacobian_min"] < 0


def test_tre_and_outside_change():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(8, 8, 8, 3))
    estimate = truth.copy()
    estimate[..., 0] += 3.0
    assert target_registration_error(estimate, truth)["mean"] == pytest.approx(3.0)
    inside = np.zeros((8, 8, 8), bool)
    inside[2:5, 2:5, 2:5] = True
    changed = truth.copy()
    changed[3, 3, 3] += 100
    assert largest_change_outside(truth, changed, inside) == 0.0
    changed[0, 0, 0, 2] += 4
    assert largest_change_outside(truth, changed, inside) == pytest.approx(4.0)


def test_corners_of_oblique_index_box_all_count():
    image = oblique_image()
    grid = ModelGrid.covering(image, (16, 32, 32))
    box = box_from_fixed_index(grid, image, [0, 0, 0, 19, 23, 15])
    assert box.voxels.lo == (0, 0, 0) and box.voxels.hi == grid.shape
    corners = [
        image.TransformContinuousIndexToPhysicalPoint(c)
        for c in itertools.product((-0.5, 19.5), (-0.5, 23.5), (-0.5, 15.5))
    ]
    np.testing.assert_allclose(np.min(corners, axis=0), box.lps_min)
