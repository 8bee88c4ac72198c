"""Quality maps: det J against an analytic field, folding, and the maps a registration writes."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TEST_GRID

from rso.core import quality
from rso.core.boxes import box_from_lps
from rso.core.geometry import ModelGrid
from rso.core.metrics import jacobian_determinant
from rso.core.results import write_results
from rso.options import DEFAULT_BLEND_MARGIN_MM
from rso.settings import RSOSettings

BUMP_BOX_IJK = [36, 21, 19, 54, 39, 33]  # around the known field's local bump (as in test_session)


def oblique_grid(size=(40, 36, 30), spacing=(2.0, 2.5, 3.0)) -> sitk.Image:
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, -45.0, -45.0))
    image.SetDirection(sitk.VersorTransform((0.3, -0.2, 1.0), 0.5).GetMatrix())
    return image


def analytic_displacement(points: np.ndarray) -> np.ndarray:
    """A smooth LPS-mm field with a strong compression at the origin: det J < 0 there (folding)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    blob = np.exp(-(x**2 + y**2 + z**2) / 800.0)
    u = np.stack(
        [
            4.0 * np.sin(y / 15.0) - 1.6 * x * blob,  # du_x/dx = -0.6 at the origin: folded
            3.0 * np.sin(z / 12.0),
            2.5 * np.cos(x / 18.0) + 0.05 * z,
        ],
        axis=-1,
    )
    return u


def voxel_points(image: sitk.Image) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij"), -1)[
        ..., ::-1
    ]
    step = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return index @ step.T + np.array(image.GetOrigin())


def finite_difference_det(points: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """det(I + du/dx) from central differences of the analytic field with a tiny step (in LPS mm)."""
    columns = [
        (analytic_displacement(points + h * e) - analytic_displacement(points - h * e)) / (2 * h)
        for e in np.eye(3)
    ]
    return np.linalg.det(np.eye(3) + np.stack(columns, axis=-1))


@pytest.fixture(scope="module")
def analytic():
    grid = oblique_grid()
    points = voxel_points(grid)
    field = sitk.GetImageFromArray(analytic_displacement(points), isVector=True)
    field.CopyInformation(grid)
    return field, finite_difference_det(points)


def test_jacobian_map_matches_finite_differences_of_an_analytic_field(analytic):
    field, expected = analytic
    jacobian = quality.jacobian_map(field)
    assert jacobian.GetSize() == field.GetSize() and jacobian.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(jacobian.GetDirection(), field.GetDirection())
    det = sitk.GetArrayFromImage(jacobian)
    inner = (slice(1, -1),) * 3  # the map's one-sided differences at the border are first order
    assert expected.min() < 0 < expected.max() and expected.max() > 1.2  # folds, compresses and stretches
    np.testing.assert_allclose(det[inner], expected[inner], atol=0.015)  # second order: (h / 20 mm)^2
    assert np.abs(det - expected).max() < 0.1


def test_folding_map_marks_exactly_where_det_j_is_not_positive(analytic):
    field, expected = analytic
    jacobian = quality.jacobian_map(field)
    folding = sitk.GetArrayFromImage(quality.folding_map(jacobian))
    assert folding.dtype == np.uint8 and set(np.unique(folding)) == {0, 1}
    np.testing.assert_array_equal(folding, sitk.GetArrayViewFromImage(jacobian) <= 0)
    clear = np.abs(expected) > 0.05  # away from det J = 0, where the two may round either way
    np.testing.assert_array_equal(folding[clear], (expected <= 0)[clear])
    summary = quality.jacobian_summary(jacobian)
    assert summary["folding_voxels"] == folding.sum() and summary["jacobian_min"] < 0


def test_jacobian_in_slabs_is_the_metrics_jacobian_bit_for_bit(analytic, monkeypatch):
    field, _ = analytic
    whole = jacobian_determinant(sitk.GetArrayFromImage(field), ModelGrid.of_image(field).index_to_lps)
    monkeypatch.setattr(quality, "JACOBIAN_SLAB_VOXELS", 3 * 36 * 40)  # 3 slices a slab: 10 slabs
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(quality.jacobian_map(field)), whole.astype(np.float32)
    )


def test_a_registration_writes_the_maps_and_the_change_is_where_the_last_step_worked(make_session, tmp_path):
    session = make_session(grid=TEST_GRID)
    session.general()
    session.iso(2)
    box = session.box_from_fixed_index(BUMP_BOX_IJK)
    session.rso(box, RSOSettings(iterations=5, mode="direct", compose="local"))
    paths = write_results(session, tmp_path, figure=False)
    fixed = session.fixed
    maps = {name: sitk.ReadImage(str(paths[name])) for name in ("jacobian", "folding", "change")}
    for image in maps.values():
        assert image.GetSize() == fixed.GetSize()
        np.testing.assert_allclose(image.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
    change = sitk.GetArrayFromImage(maps["change"])
    native = ModelGrid.of_image(fixed)
    inside = box_from_lps(native, box.lps_min, box.lps_max).voxels.slices
    # Beyond box + blend margin + one model voxel (the linear upsampling's reach) nothing moved at all.
    reach = DEFAULT_BLEND_MARGIN_MM + max(session.grid.spacing)
    near = box_from_lps(native, np.array(box.lps_min) - reach, np.array(box.lps_max) + reach).voxels.mask(
        change.shape
    )
    assert change[inside].max() > 0.05 and change[~near].max() == 0.0
    report = json.loads(paths["report"].read_text())
    assert report["quality"] == json.loads(paths["quality"].read_text())
    boxes = report["quality"]["boxes"]
    assert len(boxes) == 1 and boxes[0]["step"] == 3 and boxes[0]["box_ras"] == box.ras_corners
    assert boxes[0]["last_step_change_mm_max"] == pytest.approx(float(change[inside].max()), rel=1e-6)
    assert boxes[0]["rmse_hu_box"] == session.history[2].metrics["rmse_hu_box"]
    assert report["quality"]["last_step"]["kind"] == "rso"
    det = sitk.GetArrayFromImage(maps["jacobian"])
    assert report["quality"]["field"]["jacobian_min"] == pytest.approx(float(det.min()))
