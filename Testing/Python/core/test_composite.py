"""transform.h5 in the form the field has (rso.core.composite): the model-grid field and each native
window's correction compose, in ITK, to the same transform as the dense field of the fixed grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rso.core.composite import CoarseField, overlapping_groups, session_transform
from rso.core.geometry import ModelGrid, upsample_field
from rso.core.patches import FieldPatch, add_patches

WINDOW_LO, WINDOW_SHAPE = np.array([20, 30, 40]), (30, 40, 50)


def _fixed() -> sitk.Image:
    fixed = sitk.Image([120, 100, 80], sitk.sitkFloat32)
    fixed.SetSpacing((1.0, 1.0, 1.25))
    fixed.SetOrigin((-60.0, -50.0, -50.0))
    return fixed


def _coarse(fixed: sitk.Image) -> CoarseField:
    """A smooth field of a few mm on a model grid covering the fixed image."""
    grid = ModelGrid.covering(fixed, (32, 48, 48))
    z, y, x = np.meshgrid(*[np.linspace(0, np.pi, n) for n in grid.shape], indexing="ij")
    field = np.stack([3 * np.sin(x) * np.cos(y), 2 * np.sin(y + z), 4 * np.cos(z) * np.sin(x)], -1)
    return CoarseField(grid, field)


def _patch(fixed: sitk.Image, lo=WINDOW_LO, shape=WINDOW_SHAPE, scale=1.0) -> FieldPatch:
    """A correction of up to 4 mm on a window of the fixed grid, vanishing at the window's faces."""
    grid = ModelGrid.of_image(fixed)
    window = ModelGrid(shape, grid.spacing, tuple(grid.index_to_lps_points(lo.astype(float))), grid.direction)
    z, y, x = np.meshgrid(*[np.linspace(0, np.pi, n) for n in shape], indexing="ij")
    bump = (np.sin(z) * np.sin(y) * np.sin(x)) ** 2
    return FieldPatch(window, (scale * np.stack([4 * bump, -3 * bump, 2 * bump], -1)).astype(np.float32))


def _dense(fixed, coarse: CoarseField, patches) -> sitk.Transform:
    """What displacement.nii.gz holds: the coarse field upsampled, the patches added at native voxels."""
    upsampled = upsample_field(coarse.grid.field_image(coarse.field_mm), fixed)
    total = add_patches(sitk.GetArrayViewFromImage(upsampled), ModelGrid.of_image(fixed), patches)
    image = sitk.GetImageFromArray(total.astype(np.float64), isVector=True)
    image.CopyInformation(upsampled)
    return sitk.DisplacementFieldTransform(image)


def _random_points(fixed, count: int, seed: int) -> np.ndarray:
    """Half in the patch's window, half anywhere inside the image (LPS mm)."""
    rng, grid = np.random.default_rng(seed), ModelGrid.of_image(fixed)
    inside = WINDOW_LO + rng.uniform(0, 1, (count // 2, 3)) * (np.array(WINDOW_SHAPE) - 1)
    # Anywhere but the outermost cell of voxels, where the dense file interpolates across the model grid's
    # edge (both keep the edge value beyond it: exact at the edge voxels themselves).
    anywhere = rng.uniform(1, np.array(grid.shape) - 2, (count - count // 2, 3))
    return grid.index_to_lps_points(np.concatenate([inside, anywhere]))


def test_the_composite_moves_points_as_the_dense_field_does():
    fixed = _fixed()
    coarse, patches = _coarse(fixed), [_patch(fixed)]
    composite, dense = session_transform(coarse, patches), _dense(fixed, coarse, patches)
    points = _random_points(fixed, 1000, seed=0)
    gaps = [np.linalg.norm(np.subtract(composite.TransformPoint(p), dense.TransformPoint(p))) for p in points]
    assert max(gaps) < 0.01, max(gaps)
    moved = [np.linalg.norm(np.subtract(dense.TransformPoint(p), p)) for p in points[:500]]
    assert np.mean(moved) > 2.0  # the points in the window really move, by the patch and the field


def test_the_composite_resamples_an_image_as_the_dense_field_does():
    fixed = _fixed()
    coarse, patches = _coarse(fixed), [_patch(fixed)]
    z, y, x = np.meshgrid(*[np.arange(n) for n in fixed.GetSize()[::-1]], indexing="ij")
    moving = sitk.GetImageFromArray(
        (800 * np.sin(x / 6.0) * np.cos(y / 7.0) + 300 * np.sin(z / 5.0)).astype("f4")
    )
    moving.CopyInformation(fixed)
    warped = [
        sitk.GetArrayFromImage(sitk.Resample(moving, fixed, t, sitk.sitkLinear, -1000.0))
        for t in (session_transform(coarse, patches), _dense(fixed, coarse, patches))
    ]
    inner = (slice(3, -3),) * 3
    assert np.abs(warped[0][inner] - warped[1][inner]).max() < 0.5


def test_overlapping_windows_share_one_correction_and_distant_ones_do_not():
    fixed = _fixed()
    near = _patch(fixed, lo=WINDOW_LO + 10, scale=0.5)
    far = _patch(fixed, lo=np.array([2, 2, 2]), shape=(10, 12, 14))
    groups = overlapping_groups([_patch(fixed), near, far])
    assert sorted(len(g) for g in groups) == [1, 2]
    coarse, patches = _coarse(fixed), [_patch(fixed), near]
    composite, dense = session_transform(coarse, patches), _dense(fixed, coarse, patches)
    points = _random_points(fixed, 400, seed=1)
    gaps = [np.linalg.norm(np.subtract(composite.TransformPoint(p), dense.TransformPoint(p))) for p in points]
    assert max(gaps) < 0.01, max(gaps)


def test_the_file_holds_the_model_grid_and_the_windows_not_a_dense_field(tmp_path):
    fixed = _fixed()
    path = tmp_path / "transform.h5"
    sitk.WriteTransform(session_transform(_coarse(fixed), [_patch(fixed)]), str(path))
    read = sitk.ReadTransform(str(path))
    assert read.GetNumberOfTransforms() == 2  # the model-grid field, one window
    dense_bytes = np.prod(fixed.GetSize()) * 3 * 8
    assert path.stat().st_size < dense_bytes / 2


def test_a_framed_model_grid_exports_the_field_across_the_whole_fixed_image():
    """Where the model grid frames the body only (rso.core.body), the transform keeps the field's edge value
    out to the fixed image's edges, as the dense field does, instead of falling to no motion."""
    fixed = _fixed()
    region = ([30, 20, 10], [90, 80, 70])  # the middle of the image, as a body's frame
    grid = ModelGrid.covering(fixed, (32, 48, 48), region)
    z, y, x = np.meshgrid(*[np.linspace(0, np.pi, n) for n in grid.shape], indexing="ij")
    coarse = CoarseField(grid, np.stack([3 + np.sin(x), 2 * np.cos(y), 4 + z], -1))
    composite, dense = session_transform(coarse, [], cover=fixed), _dense(fixed, coarse, [])
    corners = ModelGrid.of_image(fixed).index_to_lps_points(np.array([[0, 0, 0], [79, 99, 119], [0, 99, 5]]))
    for point in corners:  # far outside the framed grid
        gap = np.subtract(composite.TransformPoint(point), dense.TransformPoint(point))
        assert np.linalg.norm(gap) < 1e-6
        assert np.linalg.norm(np.subtract(dense.TransformPoint(point), point)) > 1.0
