"""The simulator on real anatomy (pyradiomics' lung1 chest CT, downsampled to 4 mm for speed).

Checks the properties the rest of the project relies on: fields are invertible, the truth field
follows the ITK convention (the moving CT resampled through it is the fixed CT), the motion is
breathing-like, CBCT phases have their own streaks, cases are written whole or not at all, and
bad input gets a one-line InputError.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rso.cli import simulate as simulate_command
from rso.errors import InputError
from rso.simulation import simulate
from rso.simulation.anatomy import body_mask, lung_mask
from rso.simulation.cbct import CBCTParams, simulate_cbct
from rso.simulation.fetch import fetch_data
from rso.simulation.motion import BreathingMotion, MotionParams, check_invertible, jacobian_determinant
from rso.simulation.simulate import SimulationParams, make_phases, simulate_case, working_ct

SPACING_MM = 4.0


@pytest.fixture(scope="module")
def ct() -> sitk.Image:
    """lung1 on a 4 mm axis-aligned grid cropped to the body (about 73 x 57 x 59 voxels)."""
    return working_ct(sitk.ReadImage(str(fetch_data()["lung1"])), spacing_mm=SPACING_MM)


@pytest.fixture(scope="module")
def masks(ct) -> tuple[np.ndarray, np.ndarray]:
    body = body_mask(ct)
    return sitk.GetArrayFromImage(body).astype(bool), sitk.GetArrayFromImage(lung_mask(ct, body)).astype(bool)


@pytest.fixture(scope="module")
def ct_file(ct, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "lung1_4mm.nii.gz"
    sitk.WriteImage(ct, str(path))
    return path


def test_masks_find_body_and_two_lungs(ct, masks):
    body, lungs = masks
    assert 0.3 < body.mean() < 0.95  # cropped to the body plus a margin
    assert (lungs & ~body).sum() == 0
    assert 0.15 < lungs.sum() / body.sum() < 0.5
    hu = sitk.GetArrayFromImage(ct)
    assert np.median(hu[lungs]) < -700 and np.median(hu[body & ~lungs]) > -200


def test_motion_fields_are_invertible_breathing_like_and_seeded(ct, masks):
    body, lungs = masks
    params = MotionParams(
        si_amplitude_mm=(25.0, 25.0), ap_amplitude_mm=(5.0, 5.0), lr_amplitude_mm=(3.0, 3.0)
    )
    as_images = [sitk.GetImageFromArray(mask.astype(np.uint8)) for mask in (body, lungs)]
    motion = BreathingMotion(ct, *as_images, params, seed=3)
    assert np.abs(sitk.GetArrayViewFromImage(motion.field(0.0))).max() == 0  # end exhale is the reference
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert check_invertible(motion.field(t), f"phase {t}") > 0.2  # the strongest motion the model draws

    u = sitk.GetArrayFromImage(motion.field(0.5))[lungs]  # (n, 3): LPS x, y, z
    mean_abs = np.abs(u).mean(axis=0)
    assert mean_abs[2] > 3 * mean_abs[0] and mean_abs[2] > 3 * mean_abs[1], (
        mean_abs
    )  # mostly superior-inferior
    assert np.mean(u[:, 2]) < 0  # inhale moves the lungs down (LPS +z is superior)
    s = np.nonzero(lungs)[0]
    low, high = s < np.percentile(s, 33), s > np.percentile(s, 67)
    magnitude = np.linalg.norm(u, axis=1)
    assert magnitude[low].mean() > 3 * magnitude[high].mean()  # largest near the diaphragm, fading cranially

    again = BreathingMotion(ct, *as_images, params, seed=3)
    assert np.array_equal(
        sitk.GetArrayViewFromImage(again.field(0.3)), sitk.GetArrayViewFromImage(motion.field(0.3))
    )


def test_jacobian_matches_numpy_for_an_oblique_flipped_grid():
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    field = sitk.GetImageFromArray(
        gaussian_filter(rng.normal(size=(20, 24, 28, 3)) * 30, (3, 3, 3, 0)), isVector=True
    )
    field.SetSpacing((1.5, 2.0, 3.0))
    rotation = np.array(sitk.VersorTransform((0.3, 0.5, 0.8), 0.7).GetMatrix()).reshape(3, 3)
    direction = rotation @ np.diag([1.0, -1.0, 1.0])
    field.SetDirection(direction.ravel().tolist())
    u = sitk.GetArrayFromImage(field)
    grad_index = np.stack([np.gradient(u, axis=axis) for axis in (2, 1, 0)], axis=-1)
    expected = np.linalg.det(grad_index @ np.linalg.inv(direction @ np.diag(field.GetSpacing())) + np.eye(3))
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(jacobian_determinant(field)[inner], expected[inner], atol=1e-9)


def make_pair(ct: sitk.Image, moving_phase: float, seed: int = 0, motion: MotionParams = MotionParams()):
    """(fixed CT, moving CT, truth) of the simulator: end exhale and the phase, on the CT's own grid."""
    phases, _, _, _ = make_phases(
        working_ct(ct, spacing_mm=None, crop_margin_mm=None), [0.0, moving_phase], seed, motion
    )
    return phases[0].ct, phases[1].ct, phases[1].truth


def overlap(moving: sitk.Image, fixed: sitk.Image, field: sitk.Image) -> np.ndarray:
    """Fixed voxels whose mapped point x + u(x) lies inside the moving image's grid."""
    ones = sitk.Image(moving.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(moving)
    inside = sitk.Resample(
        ones, fixed, sitk.DisplacementFieldTransform(sitk.Image(field)), sitk.sitkLinear, 0.0
    )
    return sitk.GetArrayFromImage(inside) > 0.999


def test_truth_field_maps_moving_ct_onto_fixed_ct(ct, tmp_path):
    fixed, moving, truth = make_pair(
        ct, moving_phase=0.5, seed=0, motion=MotionParams(si_amplitude_mm=(20.0, 20.0))
    )
    assert (
        fixed.GetSize() == moving.GetSize() == truth.GetSize() and truth.GetNumberOfComponentsPerPixel() == 3
    )
    np.testing.assert_allclose(truth.GetOrigin(), fixed.GetOrigin())

    # The field as the engine and Slicer will read it: NIfTI written by the engine's writer, read by ITK.
    from rso.core.imageio import read_displacement_field, write_displacement_field

    path = write_displacement_field(truth, tmp_path / "truth.nii.gz")
    import nibabel

    assert int(nibabel.load(str(path)).header["intent_code"]) == 1006
    read_back = read_displacement_field(path)
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_back), sitk.GetArrayFromImage(truth), atol=1e-5)

    body = sitk.GetArrayFromImage(body_mask(fixed)).astype(bool)
    region = body & overlap(moving, fixed, read_back)  # where the moving image has data
    assert region.sum() > 0.8 * body.sum()
    f, m = sitk.GetArrayFromImage(fixed), sitk.GetArrayFromImage(moving)

    def rmse_after(field: sitk.Image, interpolator: int) -> float:
        warped = sitk.Resample(
            moving, fixed, sitk.DisplacementFieldTransform(sitk.Image(field)), interpolator, -1000.0
        )
        return float(np.sqrt(((sitk.GetArrayFromImage(warped) - f)[region] ** 2).mean()))

    before = float(np.sqrt(((m - f)[region] ** 2).mean()))
    assert before > 50  # 20 mm of breathing is clearly visible in HU
    # Linear interpolation of 4 mm voxels bounds the first; cubic shows the geometry is right.
    assert rmse_after(read_back, sitk.sitkLinear) < 0.3 * before
    assert rmse_after(read_back, sitk.sitkBSpline) < 0.15 * before
    reversed_field = sitk.GetImageFromArray(-sitk.GetArrayFromImage(read_back), isVector=True)
    reversed_field.CopyInformation(read_back)
    assert rmse_after(reversed_field, sitk.sitkLinear) > before  # the test tells the two directions apart


def test_cbct_phases_have_their_own_streaks(ct, masks):
    body, _ = masks
    slab = ct[:, :, 20:28]
    inside = body[20:28]
    hu = sitk.GetArrayFromImage(slab)

    def residual(phase: int, seed: int, photons: float = CBCTParams.photons_per_mm2) -> np.ndarray:
        params = CBCTParams(photons_per_mm2=photons)
        return (
            sitk.GetArrayFromImage(simulate_cbct(slab, phase, 10, params, np.random.default_rng(seed))) - hu
        )

    rms = lambda a: float(np.sqrt((a[inside] ** 2).mean()))  # noqa: E731
    # Phases 0 and 5 of 10 get interleaved angle sets half a view apart: the most different streaks.
    streaks_0, streaks_5 = residual(0, 0, photons=0), residual(5, 0, photons=0)  # noise-free: streaks only
    assert rms(streaks_0) > 20  # streaks show
    assert rms(streaks_0 - streaks_5) > 0.5 * rms(streaks_0)  # and their patterns differ
    noise_only = rms(residual(0, 1) - residual(0, 2))  # same angles, two noise draws
    between_phases = rms(residual(0, 1) - residual(5, 2))  # other angles, other noise
    assert between_phases > 2 * noise_only
    np.testing.assert_allclose(simulate_cbct(slab, 0, 10).GetOrigin(), slab.GetOrigin())


# Small cases: the source grid as is (4 mm), 30 projections per phase.
FAST = SimulationParams(spacing_mm=None, cbct=CBCTParams(projections=90))


@pytest.fixture(scope="module")
def case(ct_file, tmp_path_factory) -> Path:
    return simulate_case(ct_file, tmp_path_factory.mktemp("cases") / "case", phases=3, seed=5, params=FAST)


def test_simulate_case_writes_a_complete_case(case, ct_file):
    names = {p.name for p in case.iterdir()}
    expected = {f"{kind}_phase{k}.nii.gz" for kind in ("ct", "cbct") for k in range(3)}
    expected |= {"truth_0_1.nii.gz", "truth_0_2.nii.gz", "body_mask.nii.gz", "lung_mask.nii.gz", "case.json"}
    expected |= {f"labels_phase{k}.nii.gz" for k in range(3)} | {"labels_colors.txt"}
    expected |= {f"cbct_phase{k}_geometry.xml" for k in range(3)}
    assert names == expected
    from rso.core.projection.geometry import read_geometry
    from rso.simulation.cbct import phase_geometry

    assert all(
        read_geometry(case / f"cbct_phase{k}_geometry.xml") == phase_geometry(k, 3, FAST.cbct)
        for k in range(3)
    )
    info = json.loads((case / "case.json").read_text())
    assert info["seed"] == 5 and info["phases"] == 3 and len(info["source"]["sha256"]) == 64
    assert 8 <= info["amplitudes_mm"]["si"] <= 25
    assert {"SimpleITK", "numpy", "scikit-image"} <= set(info["versions"])
    assert all(p["det_jacobian_min"] > 0 for p in info["phase_info"][1:])
    fixed = sitk.ReadImage(str(case / "ct_phase0.nii.gz"))
    truth = sitk.ReadImage(str(case / "truth_0_2.nii.gz"))
    assert truth.GetNumberOfComponentsPerPixel() == 3 and truth.GetSize() == fixed.GetSize()
    np.testing.assert_allclose(truth.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(truth.GetSpacing(), fixed.GetSpacing(), atol=1e-6)
    with pytest.raises(InputError, match="not empty"):
        simulate_case(ct_file, case, phases=3)


def test_case_labels_follow_the_anatomy_and_are_the_truth_for_contour_propagation(case, tmp_path):
    from rso.core.labels import overlap, propagate, read_labels
    from rso.simulation.case_labels import case_labels

    labels0, table = read_labels(case / "labels_phase0.nii.gz", case / "labels_colors.txt")
    labels2, _ = read_labels(case / "labels_phase2.nii.gz")
    assert [label.name for label in table.values()] == ["right_lung", "left_lung", "nodule"]
    # Phase 2's labels sit on phase 2's anatomy (the lungs found in its CT), not on phase 0's.
    lungs2 = lung_mask(sitk.ReadImage(str(case / "ct_phase2.nii.gz"), sitk.sitkFloat32))
    lungs_of = lambda labels: sitk.Cast((labels == 1) | (labels == 2), sitk.sitkUInt8)  # noqa: E731
    assert (
        overlap(lungs_of(labels2), lungs2)[1]["dice"] > overlap(lungs_of(labels0), lungs2)[1]["dice"] + 0.01
    )
    # A perfect registration (the truth field) carries phase 2's labels back onto phase 0's.
    truth = sitk.ReadImage(str(case / "truth_0_2.nii.gz"))
    carried = propagate(labels2, truth, labels0)
    scores = overlap(carried, labels0)
    assert scores[1]["dice"] > 0.95 and scores[2]["dice"] > 0.95 and scores[3]["volume_ml"][0] > 0
    # A case simulated before the labels existed gets the same files on first use.
    old_case = tmp_path / "old"
    old_case.mkdir()
    for name in ("lung_mask.nii.gz", "truth_0_2.nii.gz"):
        (old_case / name).write_bytes((case / name).read_bytes())
    again = sitk.ReadImage(str(case_labels(old_case, 2)))
    assert (sitk.GetArrayViewFromImage(again) == sitk.GetArrayViewFromImage(labels2)).mean() > 0.999
    assert (
        case_labels(old_case, 2) == old_case / "labels_phase2.nii.gz"
        and (old_case / "labels_colors.txt").is_file()
    )


def test_plot_case_writes_a_figure(case, tmp_path):
    png = simulate.plot_case(case, tmp_path / "case.png")
    assert png.stat().st_size > 10_000


def test_failed_simulate_leaves_no_partial_output(ct_file, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("rso.simulation.cbct.simulate_cbct", lambda ct, *args, **kwargs: ct)  # speed only
    monkeypatch.setattr(simulate, "write_displacement_field", disk_full)
    with pytest.raises(OSError, match="disk full"):
        simulate_case(ct_file, tmp_path / "case", phases=2, params=FAST)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_get_one_line_input_errors(tmp_path):
    rng = np.random.default_rng(0)
    not_ct = sitk.GetImageFromArray(
        rng.uniform(0, 1, (20, 30, 30)).astype(np.float32)
    )  # e.g. a probability map
    sitk.WriteImage(not_ct, str(tmp_path / "not_ct.nii.gz"))
    flat = sitk.GetImageFromArray(rng.uniform(-1000, 1000, (30, 30)).astype(np.float32))
    sitk.WriteImage(flat, str(tmp_path / "slice.nii.gz"))
    cases = [
        (tmp_path / "not_ct.nii.gz", "does not look like a CT"),
        (tmp_path / "slice.nii.gz", "2-D"),
        (tmp_path / "missing.nii.gz", "not found"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as error:
            simulate_case(path, tmp_path / "case")
        assert "\n" not in str(error.value)
    assert not (tmp_path / "case").exists()
    with pytest.raises(InputError, match="does not look like a CT"):
        make_pair(not_ct, 0.5)


def test_ct_without_lungs_is_an_input_error():
    # A water cylinder in air: a CT, but no lungs to breathe with.
    z, y, x = np.mgrid[:16, :40, :40]
    phantom = np.where((y - 20) ** 2 + (x - 20) ** 2 < 15**2, 0.0, -1000.0).astype(np.float32)
    image = sitk.GetImageFromArray(phantom)
    image.SetSpacing((4.0, 4.0, 4.0))
    with pytest.raises(InputError, match="no lungs"):
        make_pair(image, 0.5)


def test_simulate_subcommand_is_registered():
    parser = argparse.ArgumentParser()
    simulate_command.add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["simulate", "--ct", "a.nii.gz", "--out", "case", "--phases", "4", "--seed", "7"]
    )
    assert (args.ct, args.out, args.phases, args.seed) == (Path("a.nii.gz"), Path("case"), 4, 7) and callable(
        args.func
    )
