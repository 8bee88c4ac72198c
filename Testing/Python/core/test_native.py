"""Native-resolution RSO (rso.core.native) on real chest CT: its window's geometry, its similarity on
streaky CBCT-like images, its guard, and the patches it leaves in the session."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import TEST_GRID, session_of

from rso.core.boxes import axial_end_distance_mm, box_from_lps
from rso.core.geometry import ModelGrid
from rso.core.native import (
    Refinement,
    axis_share,
    build_problem,
    guard_verdict,
    motion_left,
    refine_box,
    sample,
    with_second_opinion,
)
from rso.core.optimize import blend_weights
from rso.core.session import RegistrationSession
from rso.settings import RSOSettings

SHIFT_MM = np.array([3.0, -3.0, 4.0])  # LPS: a lesion-sized offset the box must recover


def constant_field(image: sitk.Image, vector_mm) -> sitk.Image:
    field = sitk.GetImageFromArray(
        np.broadcast_to(np.asarray(vector_mm, float), (*image.GetSize()[::-1], 3)).copy(), isVector=True
    )
    field.CopyInformation(image)
    return field


def streaky(ct: sitk.Image, phase: int) -> sitk.Image:
    """A CBCT-like image of the CT from its own sparse subset of angles (streaks differ per phase)."""
    from rso.simulation.cbct import CBCTParams, simulate_cbct

    return simulate_cbct(ct, phase, 2, CBCTParams(projections=80), np.random.default_rng(phase))


@pytest.fixture(scope="module")
def unshifted_cbct(chest_ct):
    """The same anatomy in both, each CBCT with its own streaks: nothing to fix."""
    return streaky(chest_ct, 0), streaky(chest_ct, 1), constant_field(chest_ct, (0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def shifted_cbct(chest_ct):
    """fixed(x) = moving(x + SHIFT): fixed and moving are CBCTs with different streaks, the truth a
    constant."""
    from rso.simulation.phantom import pair_from_field

    pair = pair_from_field(chest_ct, constant_field(chest_ct, SHIFT_MM))
    return streaky(pair.fixed, 0), streaky(chest_ct, 1), pair.truth


def native_session(pair, **keywords) -> RegistrationSession:
    """A session on a (fixed, moving, truth) pair with an untrained network on the test grid, on the CPU:
    native RSO needs no trained model. ``keywords``: session_of's (folder, the geometries, ...)."""
    fixed, moving, truth = pair
    return session_of(fixed, moving, _untrained(), grid=TEST_GRID, truth=truth, device="cpu", **keywords)


def lung_box(session: RegistrationSession, half_mm: float = 20.0):
    """A box in the right lung of the small CT (fixed-image voxels around a point inside the lung)."""
    centre = np.array(session.fixed.TransformContinuousIndexToPhysicalPoint([30.0, 28.0, 12.0]))
    return session.box_from_lps(centre - half_mm, centre + half_mm)


def test_window_grid_and_moving_crop_match_simpleitk_resampling(known_pair):
    """The fixed window is SimpleITK's resampling; the warped moving crop is the moving image resampled
    through the current field, as ITK would do it, on an oblique fixed image too."""
    for oblique in (False, True):
        fixed, moving, truth = (sitk.Image(image) for image in known_pair)  # copies: the fixture is shared
        if oblique:
            rotation = sitk.VersorTransform((0.0, 0.2, 1.0), 0.3).GetMatrix()
            for image in (fixed, moving, truth):
                image.SetDirection(rotation)
        session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
        grid = session.grid
        current = grid.resample_field(truth)
        box = lung_box(session)
        problem = build_problem((fixed, moving), box, 10.0, grid, (current, ()), torch.device("cpu"))
        window = problem.window
        assert window.direction == grid.direction and len(set(window.spacing)) == 1
        assert 1.0 <= window.spacing[0] <= 2.0
        expected = sitk.GetArrayFromImage(
            sitk.Resample(
                fixed, window.reference_image(), sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32
            )
        )
        np.testing.assert_allclose(problem.fixed[0, 0].numpy(), expected, atol=1e-3)
        # The blend ramp is 1 in the box and vanishes at the window's border.
        weights = blend_weights(problem.box, problem.margin_voxels, window.shape)
        assert weights[0].max() == 0 and weights[-1].max() == 0 and weights[problem.box.slices].min() == 1
        field = sitk.GetImageFromArray(problem.current_mm.astype(np.float64), isVector=True)
        field.CopyInformation(window.reference_image())
        through_itk = sitk.GetArrayFromImage(
            sitk.Resample(
                moving,
                window.reference_image(),
                sitk.DisplacementFieldTransform(sitk.Image(field)),
                sitk.sitkLinear,
                -1000.0,
                sitk.sitkFloat32,
            )
        )
        ours = sample(problem.moving, problem.base_index)[0, 0].numpy()
        interior = (slice(2, -2),) * 3
        difference = np.abs(ours[interior] - through_itk[interior])
        # The same numbers up to the second linear interpolation (moving -> crop -> point instead of moving ->
        # point): small where the image is smooth. Half a window voxel off would be far worse everywhere.
        off = sample(problem.moving, problem.base_index + torch.tensor([0.0, 0.0, 0.5]))[0, 0].numpy()
        assert np.median(difference) < 1.0 and np.percentile(difference, 99) < 60.0
        assert np.abs(off[interior] - through_itk[interior]).mean() > 3 * difference.mean()


def test_native_rso_recovers_a_known_shift_between_streaky_images(shifted_cbct):
    session = native_session(shifted_cbct)
    box = lung_box(session)
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    record = session.rso(box, RSOSettings(mode="native"))
    assert record.accepted, record.declined
    assert before == pytest.approx(np.linalg.norm(SHIFT_MM), abs=0.1)
    assert record.metrics["tre_mm_box"]["mean"] < 0.3 * before
    assert record.metrics["outside_change_mm"] == 0.0 and record.guard["folded_after"] == 0
    assert len(session.state.patches) == 1


@pytest.mark.parametrize("stored", ["RAS", "PSL"])
def test_native_rso_takes_the_same_step_however_the_files_store_the_images(shifted_cbct, stored):
    """The window runs along the model grid's axes, which lie nearest LPS whatever the voxel order: the
    same pair stored RAS or as a sagittal stack gets the same step in the same box."""
    fixed, moving, truth = shifted_cbct
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([30.0, 28.0, 12.0]))
    records = []
    for images in ((fixed, moving), tuple(sitk.DICOMOrient(image, stored) for image in (fixed, moving))):
        session = native_session((*images, truth))
        box = session.box_from_lps(centre - 20.0, centre + 20.0)
        records.append(session.rso(box, RSOSettings(mode="native")))
    assert all(record.accepted for record in records)
    after = [record.metrics["tre_mm_box"]["mean"] for record in records]
    assert after[1] == pytest.approx(after[0], abs=0.05)
    assert records[1].guard["gain"] == pytest.approx(records[0].guard["gain"], abs=0.01)


def test_the_fine_patch_reaches_the_native_field_and_undo_drops_it(shifted_cbct, tmp_path):
    from rso.core.native_grid import native_field

    fixed = shifted_cbct[0]
    session = native_session(shifted_cbct, folder=tmp_path / "session")
    box = lung_box(session)
    before = sitk.GetArrayFromImage(native_field(session))
    session.rso(box, RSOSettings(mode="native"))
    after = sitk.GetArrayFromImage(native_field(session))
    index = np.round(
        fixed.TransformPhysicalPointToContinuousIndex(
            (0.5 * (np.array(box.lps_min) + np.array(box.lps_max))).tolist()
        )
    ).astype(int)
    np.testing.assert_allclose(
        after[tuple(index[::-1])], SHIFT_MM, atol=1.5
    )  # the box's centre, native voxel
    corner = (0, 0, 0)  # far outside box + margin: exactly as before
    np.testing.assert_array_equal(after[corner], before[corner])
    reopened = RegistrationSession.open(
        tmp_path / "session", device="cpu"
    )  # NIfTI keeps the geometry in float32
    np.testing.assert_allclose(sitk.GetArrayFromImage(native_field(reopened)), after, atol=1e-5)
    session.undo()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(native_field(session)), before)


def test_the_guard_declines_when_the_box_already_agrees_and_nothing_changes(unshifted_cbct, tmp_path):
    session = native_session(unshifted_cbct, folder=tmp_path / "session")
    session.general()  # an untrained network: about the identity, which is the truth here
    field, manifest = session.field_voxels.copy(), (tmp_path / "session" / "session.json").read_bytes()
    record = session.rso(lung_box(session), RSOSettings(mode="native"))
    assert not record.accepted and "no correction clearly improves" in record.declined
    assert record.guard["gain"] < RSOSettings().min_gain
    assert len(session.history) == 1 and not session.state.patches
    np.testing.assert_array_equal(session.field_voxels, field)
    assert (tmp_path / "session" / "session.json").read_bytes() == manifest


def _folding_problem(shifted_cbct):
    """A box's problem on real anatomy from the identity field, settings, its blend weights, and a
    correction maker: ``wave(a)`` is a * sin(z / 2) mm along S, whose du/dz reaches -a / 2 (det J <= 0, the
    field turning back on itself, once a > 2)."""
    fixed, moving, _ = shifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    problem = build_problem(
        (fixed, moving),
        lung_box(session),
        10.0,
        grid,
        (np.zeros((*grid.shape, 3), np.float32), ()),
        torch.device("cpu"),
    )
    settings = RSOSettings(
        similarity="mind",
        control_spacing_mm=10.0,
        smoothness=1.0,
        step_mm=0.3,
        min_gain=0.0,
        presmooth_mm=0.0,
    )
    weights = blend_weights(problem.box, problem.margin_voxels, problem.window.shape)
    z = np.arange(problem.window.shape[0]) * problem.window.spacing[0]

    def wave(amplitude: float) -> np.ndarray:
        correction = np.zeros((*problem.window.shape, 3), np.float32)
        correction[..., 2] = amplitude * np.sin(z / 2.0)[:, None, None]
        return correction

    return problem, settings, weights, wave


def test_the_guard_declines_a_correction_that_would_fold(shifted_cbct):
    problem, settings, weights, wave = _folding_problem(shifted_cbct)
    verdict = guard_verdict(Refinement(problem, settings), weights, wave(8.0))
    assert verdict.folded_after > verdict.folded_before == 0 and "fold" in verdict.declined
    # Where the field has no folds, no share of added folds is allowed.
    relaxed = Refinement(problem, replace(settings, max_added_fold_share=1e6))
    assert "fold" in guard_verdict(relaxed, weights, wave(8.0)).declined


def test_a_field_already_folded_may_gain_the_allowed_share_of_folded_voxels(shifted_cbct):
    """Where the current field already folds in box + margin, ``max_added_fold_share`` lets a step add up to
    that share of its folded voxels (none by default)."""
    problem, settings, weights, wave = _folding_problem(shifted_cbct)
    folded = replace(problem, current_mm=wave(4.0))  # du/dz down to -2: bands where the field folds
    deeper = np.zeros_like(folded.current_mm)  # the bands widen, in two columns of voxels in the box only
    columns = (*problem.box.slices[:2], slice(problem.box.slices[2].start, problem.box.slices[2].start + 2))
    deeper[columns] = wave(3.0)[columns]
    strict = guard_verdict(Refinement(folded, settings), weights, deeper)
    assert strict.folded_after > strict.folded_before > 0 and "fold" in strict.declined
    added = (strict.folded_after - strict.folded_before) / strict.folded_before
    tolerant = Refinement(folded, replace(settings, max_added_fold_share=2 * added))
    assert "fold" not in (guard_verdict(tolerant, weights, deeper).declined or "")
    too_few = Refinement(folded, replace(settings, max_added_fold_share=added / 2))
    assert "at most" in guard_verdict(too_few, weights, deeper).declined


def test_the_guard_declines_a_box_the_field_sends_outside_the_moving_image(shifted_cbct):
    """Where the field sends the box below the moving image's volume, the moving crop holds air there: the
    guard records the share of the box sent outside and declines the step beyond ``max_outside_share``."""
    fixed, moving, _ = shifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    box = lung_box(session)
    depth_mm = np.array(moving.GetSize()) * np.array(moving.GetSpacing())  # (x, y, z) extent
    settings = RSOSettings(min_gain=0.0, max_outside_share=0.5)
    for shift, expected in ((0.0, 0.0), (depth_mm[2], 1.0)):
        field = np.zeros((*grid.shape, 3), np.float32)
        field[..., 2] = -shift  # LPS: towards the feet, past the volume's inferior end
        problem = build_problem((fixed, moving), box, 10.0, grid, (field, ()), torch.device("cpu"))
        weights = blend_weights(problem.box, problem.margin_voxels, problem.window.shape)
        none = np.zeros((*problem.window.shape, 3), np.float32)
        verdict = guard_verdict(Refinement(problem, settings), weights, none)
        assert verdict.outside_share == pytest.approx(expected)
        assert verdict.to_dict()["outside_share"] == verdict.outside_share
        assert ("outside the moving image" in (verdict.declined or "")) == (expected > 0.5)


def test_a_box_near_the_images_end_along_the_rotation_axis_is_declined_where_the_scan_is_known(
    unshifted_cbct, tmp_path
):
    """With both projection geometries, a box closer than ``min_end_distance_mm`` (20 mm by default) to the
    fixed image's first or last slice along the scanner's rotation axis is declined before any
    optimisation, saying why, and the session stays as it was; without the geometries (a CT, or phases
    whose scan is not known) and with the rule off (0) the box's place declines nothing."""
    from rso.core.projection.geometry import ProjectionGeometry, write_geometry
    from rso.core.projection.scan import PhaseScan

    views = ProjectionGeometry.circular(1000.0, 1536.0, np.arange(0.0, 360.0, 10.0))
    scan = PhaseScan.read(str(write_geometry(views, tmp_path / "scan.xml", "fdk")))
    session = native_session(unshifted_cbct, fixed_geometry=scan, moving_geometry=scan, folder=tmp_path / "s")
    session.general()
    fixed, axis = session.fixed, session.pair.rotation_axis()
    size = np.array(fixed.GetSize())
    ends = [
        fixed.TransformContinuousIndexToPhysicalPoint([*(size[:2] / 2), k])[2] for k in (-0.5, size[2] - 0.5)
    ]
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([30.0, 28.0, 12.0]))
    lowest = min(ends)
    near = session.box_from_lps((*(centre[:2] - 20), lowest + 5), (*(centre[:2] + 20), lowest + 45))
    assert np.allclose(np.abs(axis), (0, 0, 1)) and axial_end_distance_mm(fixed, near, axis) == pytest.approx(
        5.0
    )
    assert axial_end_distance_mm(fixed, lung_box(session), axis) > 20.0
    manifest = (tmp_path / "s" / "session.json").read_bytes()
    record = session.rso(near, RSOSettings())
    assert not record.accepted and "rotation axis" in record.declined and not record.loss
    assert len(session.history) == 1 and (tmp_path / "s" / "session.json").read_bytes() == manifest
    assert "rotation axis" not in (session.rso(near, RSOSettings(min_end_distance_mm=0)).declined or "")
    without = native_session(unshifted_cbct)
    without.general()
    assert "rotation axis" not in (without.rso(near, RSOSettings()).declined or "")


def test_the_guard_declines_a_correction_the_images_as_given_do_not_support(shifted_cbct, unshifted_cbct):
    """A correction that aligns the fitted (artefact-matched) pair but not the images as given is declined,
    and says why; without images as given there is no such check (the verdict has no unfitted gain)."""
    fixed, moving, _ = shifted_cbct  # the fitted pair asks for SHIFT_MM
    as_given = unshifted_cbct[:2]  # the same anatomy, no shift: the correction makes these worse
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    box = lung_box(session)
    settings = RSOSettings(min_gain=0.2, min_unfitted_gain=0.05, returns=False)
    current = (np.zeros((*grid.shape, 3), np.float32), ())
    cpu = torch.device("cpu")
    patch, _, verdict = refine_box(build_problem((fixed, moving), box, 10.0, grid, current, cpu), settings)
    assert patch is not None and verdict.gain >= 0.2 and verdict.unfitted_gain is None
    both = build_problem((fixed, moving), box, 10.0, grid, current, cpu, unfitted=as_given)
    patch, _, verdict = refine_box(both, settings)
    assert patch is None and verdict.gain >= 0.2 and verdict.unfitted_gain < 0.05
    assert "does not hold on the images as given" in verdict.declined and verdict.disagreement_mm is None
    assert verdict.to_dict()["unfitted_gain"] == verdict.unfitted_gain


def test_a_second_similarity_confirms_a_real_shift_and_its_disagreement_declines(shifted_cbct):
    """On the images as given the kept correction is refined again under local NCC, which finds the same
    shift (its progress shows as its own step); a second opinion further away than
    ``max_disagreement_mm`` declines the step and says why. Matched pairs have the unfitted gain instead."""
    fixed, moving, _ = shifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    settings = RSOSettings(returns=False)
    current = (np.zeros((*grid.shape, 3), np.float32), ())
    problem = build_problem((fixed, moving), lung_box(session), 10.0, grid, current, torch.device("cpu"))
    steps = []
    patch, _, verdict = refine_box(problem, settings, progress=lambda update: steps.append(update.step))
    assert patch is not None and verdict.declined is None
    assert verdict.disagreement_mm < settings.max_disagreement_mm
    assert verdict.to_dict()["disagreement_mm"] == verdict.disagreement_mm
    assert steps.count("rso") == steps.count("rso check") == settings.iterations
    declined = with_second_opinion(verdict, 2.5, settings)
    assert declined.disagreement_mm == 2.5 and "second similarity does not confirm" in declined.declined
    assert with_second_opinion(verdict, 0.5, settings).declined is None
    steps.clear()
    patch, _, verdict = refine_box(problem, replace(settings, max_disagreement_mm=0.0), progress=steps.append)
    assert patch is not None and verdict.disagreement_mm is None and len(steps) == settings.iterations
    _, _, verdict = refine_box(replace(problem, matched=True), settings)  # matched: no second opinion
    assert verdict.disagreement_mm is None


def test_an_earlier_state_the_images_prefer_clearly_becomes_the_box_answer(unshifted_cbct):
    """A whole-image step moved the box away from an earlier, better field: the step returns the box there
    (no translation could), without refining it; an earlier field that explains the box worse is left
    alone, and so is a better one that does not clear the guard's margin. The earlier state here is no
    registration: by default the motion-left rule declines the return (artefacts fixed in the scanner
    favour no motion), so the return is checked with that rule off."""
    fixed, moving, _ = unshifted_cbct  # the truth is the identity
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    box = lung_box(session)
    identity, wrong = _identity_and_wrong(grid)
    settings = RSOSettings(min_gain=0.2, iterations=5, min_motion_left=0.0)

    cpu = torch.device("cpu")
    went_wrong = build_problem((fixed, moving), box, 10.0, grid, (wrong, ()), cpu, earlier=((identity, ()),))
    patch, _, declined = refine_box(went_wrong, replace(settings, min_motion_left=0.4))
    assert patch is None and declined.returned_to == 0 and declined.motion_left == pytest.approx(0.0)
    assert "takes the box back toward no motion" in declined.declined
    patch, losses, verdict = refine_box(went_wrong, settings)
    assert verdict.returned_to == 0 and verdict.gain >= 0.2 and verdict.declined is None and losses == []
    weights = blend_weights(went_wrong.box, went_wrong.margin_voxels, went_wrong.window.shape)
    np.testing.assert_allclose(patch.delta_mm, weights[..., None] * -went_wrong.current_mm, atol=1e-5)

    was_right = build_problem((fixed, moving), box, 10.0, grid, (identity, ()), cpu, earlier=((wrong, ()),))
    refinement = Refinement(was_right, settings)
    assert refinement.choose_return() is None and not refinement.correction_mm().any()
    _, gain = Refinement(went_wrong, replace(settings, min_gain=0.0)).choose_return()
    assert Refinement(went_wrong, replace(settings, min_gain=gain + 0.01)).choose_return() is None


def test_the_return_is_judged_on_the_images_the_current_field_was_not_fitted_to(unshifted_cbct, chest_ct):
    """After ISO on matched images, the matched pair is biased towards ISO's answer: the images as given
    (``unfitted``) decide whether the box returns to an earlier state, whatever the fitted pair says."""
    fixed, moving, _ = unshifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    box = lung_box(session)
    identity, wrong = _identity_and_wrong(grid)
    settings = RSOSettings(min_gain=0.2, iterations=5)
    # A fitted pair that says nothing about the box: a uniform moving image.
    blank = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(fixed).shape, -700.0, np.float32))
    blank.CopyInformation(fixed)
    cpu = torch.device("cpu")
    fitted_only = build_problem((fixed, blank), box, 10.0, grid, (wrong, ()), cpu, earlier=((identity, ()),))
    assert fitted_only.fixed.shape[1] == 1 and Refinement(fitted_only, settings).choose_return() is None
    with_unfitted = build_problem(
        (fixed, blank), box, 10.0, grid, (wrong, ()), cpu, earlier=((identity, ()),), unfitted=(fixed, moving)
    )
    assert with_unfitted.fixed.shape[1] == with_unfitted.moving.shape[1] == 2
    assert Refinement(with_unfitted, settings).choose_return()[0] == 0


def _identity_and_wrong(grid: ModelGrid) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y, X, 3) LPS mm: no displacement, and one that swings 6 mm along x with z (wrong for these
    pairs)."""
    identity = np.zeros((*grid.shape, 3), np.float32)
    wrong = identity.copy()
    wrong[..., 0] = 6.0 * np.sin(2 * np.pi * np.arange(grid.shape[0]) / grid.shape[0])[:, None, None]
    return identity, wrong


def _untrained():
    from conftest import TINY_CHANNELS

    from rso.core.model import ModelConfig, RegistrationNet

    torch.manual_seed(0)
    return RegistrationNet(ModelConfig(channels=TINY_CHANNELS, grid=TEST_GRID))


def test_mind_descriptors_follow_structure_not_grey_levels(chest_ct):
    from rso.core.mind import CHANNELS, mind_ssc

    hu = torch.from_numpy(sitk.GetArrayFromImage(chest_ct)[:24, :40, :40].copy())[None, None]
    mind = mind_ssc(hu)
    assert mind.shape == (1, CHANNELS, 24, 40, 40) == (1, 12, 24, 40, 40)
    assert float(mind.min()) > 0 and float(mind.max()) <= 1
    torch.testing.assert_close(
        mind_ssc(0.5 * hu - 300.0), mind, atol=1e-4, rtol=1e-4
    )  # another window, same MIND
    assert (
        float((mind_ssc(torch.roll(hu, 2, dims=4)) - mind).abs().mean()) > 0.05
    )  # moved anatomy: other MIND
    with pytest.raises(ValueError, match="B, 1, D, H, W"):
        mind_ssc(hu[0])


@pytest.mark.parametrize("grid_shape", [(32, 64, 64), (48, 80, 80), (16, 48, 32)])
@pytest.mark.parametrize("margin_mm", [5.0, 15.0])
def test_a_patch_is_exactly_zero_at_every_model_voxel_beyond_box_and_margin(
    known_pair, grid_shape, margin_mm
):
    """Whatever the model grid's spacing, the window's margin ends before the model voxels outside
    box + margin."""
    from rso.core.native import window_grid
    from rso.core.patches import FieldPatch

    fixed = known_pair[0]
    grid = ModelGrid.covering(fixed, grid_shape)
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([30.0, 28.0, 12.0]))
    box = box_from_lps(grid, centre - 17.0, centre + 23.0)
    window, box_voxels, margin = window_grid(grid, box, margin_mm)
    ones = blend_weights(box_voxels, margin, window.shape)[..., None] * np.ones(3, np.float32)
    slices, values = FieldPatch(window, ones.astype(np.float32)).on_grid(grid)
    touched = np.zeros(grid.shape, bool)
    touched[slices] = np.abs(values).max(axis=-1) > 0
    margin_voxels = np.ceil(margin_mm / grid.voxel_size_mm()).astype(int)
    around = box.voxels.expanded(margin_voxels, grid.shape).mask(grid.shape)
    assert touched.any() and not (touched & ~around).any()
    assert touched[box.voxels.slices].mean() > 0.9  # and the box itself is (almost all) refined


def test_the_axis_share_declines_a_correction_across_the_scanners_rotation_axis(shifted_cbct):
    """The same recovered shift (3, -3, 4) mm is kept where the scanner rotates about the superior axis
    (4 of its 5.8 mm lie along it) and declined, with why, about an oblique axis across it (left and
    posterior); without a rotation axis (no geometry) the share is not judged."""
    fixed, moving, _ = shifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    settings = RSOSettings(returns=False, max_disagreement_mm=0.0)
    current = (np.zeros((*grid.shape, 3), np.float32), ())
    problem = build_problem((fixed, moving), lung_box(session), 10.0, grid, current, torch.device("cpu"))
    _, _, unjudged = refine_box(problem, settings)
    assert unjudged.declined is None and unjudged.axis_share is None
    superior = replace(problem, rotation_axis=np.array([0.0, 0.0, 1.0]))
    patch, _, kept = refine_box(superior, settings)
    assert patch is not None and kept.axis_share > settings.min_axis_share
    assert kept.to_dict()["axis_share"] == kept.axis_share
    across = replace(problem, rotation_axis=np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0))
    patch, _, declined = refine_box(across, settings)
    assert patch is None and declined.axis_share < settings.min_axis_share
    assert "lies mostly across the scanner's rotation axis" in declined.declined
    assert refine_box(across, replace(settings, min_axis_share=0.0))[0] is not None


def test_a_correction_back_to_no_motion_is_declined(unshifted_cbct):
    """Both CBCTs hold the same anatomy; a current field of SHIFT in the box (5.8 mm) is wrong, and the step
    takes it all back (little motion left). A step to no motion is what artefacts fixed in the scanner
    favour, so it is declined with why; with the rule off (0) it is kept. From no motion the motion left is
    not judged."""
    fixed, moving, _ = unshifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    settings = RSOSettings(returns=False, max_disagreement_mm=0.0)
    moved = (np.broadcast_to(SHIFT_MM, (*grid.shape, 3)).astype(np.float32), ())
    problem = build_problem((fixed, moving), lung_box(session), 10.0, grid, moved, torch.device("cpu"))
    patch, _, declined = refine_box(problem, settings)
    assert patch is None and declined.motion_left < settings.min_motion_left
    assert "takes the box back toward no motion" in declined.declined
    assert declined.to_dict()["motion_left"] == declined.motion_left
    patch, _, kept = refine_box(problem, replace(settings, min_motion_left=0.0))
    assert patch is not None and kept.declined is None and kept.motion_left < 0.4
    still = (np.zeros((*grid.shape, 3), np.float32), ())
    problem = build_problem((fixed, moving), lung_box(session), 10.0, grid, still, torch.device("cpu"))
    assert refine_box(problem, settings)[2].motion_left is None


def test_the_motion_left_by_simple_corrections():
    """Back to no motion leaves none; through no motion to as much on the other side, or a turn aside of
    the same length, leaves more than straight back part of the way would (artefacts favour none)."""
    current = np.zeros((4, 4, 4, 3))
    current[..., 2] = -10.0
    assert motion_left(-current, current) == pytest.approx(0.0)
    assert motion_left(-0.6 * current, current) == pytest.approx(0.4)
    assert motion_left(0.3 * current, current) == pytest.approx(1.3)
    assert motion_left(-2.0 * current, current) == pytest.approx(1.0)  # reversed: not toward none
    across = np.zeros_like(current)
    across[..., 0] = 5.0
    assert motion_left(across, current) == pytest.approx(np.sqrt(1.25))
    assert motion_left(-current, current / 10.0) is None  # 1 mm of motion: not judged


def test_the_axis_share_of_simple_corrections():
    along, across = np.zeros((4, 4, 4, 3)), np.zeros((4, 4, 4, 3))
    along[..., 2], across[..., 0] = 2.0, -3.0
    axis = np.array([0.0, 0.0, 1.0])
    assert axis_share(along, axis) == pytest.approx(1.0) and axis_share(across, axis) == pytest.approx(0.0)
    assert axis_share(along + across, axis) == pytest.approx(2.0 / np.hypot(2.0, 3.0))
    assert axis_share(np.zeros((2, 2, 2, 3)), axis) is None
