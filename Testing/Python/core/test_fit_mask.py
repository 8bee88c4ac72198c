"""Masks that limit the fit (--fit-mask), masks that only measure (--metrics-mask, --mask), and the
network's input normalisation for images that are not CT (--allow-non-ct).

Small model grids and a tiny network, so that the file runs in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import TEST_GRID, TINY_CHANNELS, session_of, write

from rso.core.losses import LossConfig, RegistrationLoss
from rso.core.model import ModelConfig, RegistrationNet, normalise
from rso.core.native import Refinement, build_problem, limit_to_fit_mask
from rso.core.pair import NON_CT_PERCENTILES, Normalisation
from rso.core.session import RegistrationSession
from rso.core.workflow import RegisterJob, start_session
from rso.errors import InputError
from rso.settings import EngineSettings, ISOSettings, PairInputs, RSOSettings

SMALL_GRID = (16, 32, 32)
ISO_ITERATIONS = 25


def tiny_net() -> RegistrationNet:
    torch.manual_seed(0)
    return RegistrationNet(ModelConfig(channels=TINY_CHANNELS, grid=TEST_GRID))


def unit_coordinates(shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) arrays in [-1, 1] across a (z, y, x) shape."""
    return np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


@pytest.fixture(scope="module")
def one_sided_pair(chest_ct):
    """(fixed, moving, truth, fit mask): the truth moves the patient's left side (x > 0) by up to 9 mm
    and leaves the right side (x < 0) still; the fit mask is the right side only."""
    from rso.simulation.phantom import pair_from_field

    z, y, x = unit_coordinates(chest_ct.GetSize()[::-1])
    left = 1 / (1 + np.exp(-(x - 0.35) / 0.08)) * np.exp(-(z**2 + y**2) / 0.5)
    field = np.zeros((*x.shape, 3))
    field[..., 0], field[..., 2] = 8.0 * left, 5.0 * left
    truth = sitk.GetImageFromArray(field, isVector=True)
    truth.CopyInformation(chest_ct)
    pair = pair_from_field(chest_ct, truth)
    fit_mask = image_like((x < -0.1).astype(np.uint8), chest_ct)
    return pair.fixed, pair.moving, truth, fit_mask


def session_on(pair, **kwargs) -> RegistrationSession:
    fixed, moving, truth, _ = pair
    kwargs = {"grid": SMALL_GRID, "device": "cpu", "precision": "fp32", **kwargs}
    return session_of(fixed, moving, tiny_net(), truth=truth, **kwargs)


@pytest.fixture(scope="module")
def iso_runs(one_sided_pair):
    """The same ISO without a mask, with the fit mask, and with the mask as a metrics mask only."""
    fit_mask = one_sided_pair[3]
    runs = {}
    for name, kwargs in (("plain", {}), ("fit", {"fit_mask": fit_mask}), ("metrics", {"mask": fit_mask})):
        session = session_on(one_sided_pair, **kwargs)
        session.general()
        session.iso(ISOSettings(iterations=ISO_ITERATIONS, guard=False))  # the field must move to compare
        runs[name] = session
    return runs


def moved_side(session: RegistrationSession) -> np.ndarray:
    """Model-grid voxels well inside the moved (left) side, away from the fit mask."""
    z, y, x = unit_coordinates(session.grid.shape)
    return (x > 0.55) & (y**2 + z**2 < 0.3)


def test_the_fit_mask_leaves_a_deformation_outside_it_unfitted(iso_runs):
    plain, fitted = iso_runs["plain"], iso_runs["fit"]
    side = moved_side(plain)
    truth = np.linalg.norm(plain.truth_mm[side], axis=-1).mean()
    error = {
        n: np.linalg.norm(s.field_mm[side] - s.truth_mm[side], axis=-1).mean() for n, s in iso_runs.items()
    }
    assert truth > 5.0
    assert error["plain"] < 0.75 * truth  # without a mask ISO fits the moving side ...
    assert error["fit"] > 0.95 * truth  # ... with it the loss never sees that side: nothing is fitted there
    assert np.linalg.norm(fitted.field_mm[side], axis=-1).mean() < 0.5
    # Inside the mask the images already agree: the masked loss starts (near) zero, the plain one not.
    assert fitted.history[1].loss[0] < 0.01 * plain.history[1].loss[0]
    inside = fitted.pair.fit_grid
    assert not np.allclose(fitted.field_mm[inside], plain.field_mm[inside], atol=1e-3)


def test_the_metrics_mask_changes_the_metrics_only(iso_runs):
    plain, measured = iso_runs["plain"], iso_runs["metrics"]
    np.testing.assert_array_equal(measured.field_voxels, plain.field_voxels)
    assert measured.history[1].loss == plain.history[1].loss
    assert measured.history[1].metrics["tre_mm"] != plain.history[1].metrics["tre_mm"]
    assert measured.pair.fit_grid is None and measured.pair.evaluation_mask is not None


@pytest.mark.parametrize("similarity", ["mse", "lncc", "mind"])
def test_the_masked_loss_is_blind_outside_the_mask(similarity):
    generator = torch.Generator().manual_seed(0)
    fixed, warped = torch.rand(2, 1, 1, 24, 24, 24, generator=generator)
    mask = torch.zeros(1, 1, 24, 24, 24)
    mask[..., :10] = 1.0
    changed = warped.clone()
    changed[..., 18:] += torch.rand(1, 1, 24, 24, 6, generator=generator)  # beyond MIND's and LNCC's reach
    config = LossConfig(similarity=similarity, smoothness_weight=0.0)
    masked, plain = RegistrationLoss(config, mask), RegistrationLoss(config)
    zero = torch.zeros(1, 3, 24, 24, 24)
    assert float(masked(fixed, changed, zero)) == pytest.approx(float(masked(fixed, warped, zero)), abs=1e-6)
    assert float(plain(fixed, changed, zero)) != pytest.approx(float(plain(fixed, warped, zero)), abs=1e-6)
    # A crop window and a box take the mask with them.
    window = (slice(0, 24), slice(0, 24), slice(4, 20))
    cropped = masked.on_window(window)
    box = (slice(2, 20), slice(2, 20), slice(0, 10))
    assert float(cropped(fixed[(..., *window)], changed[(..., *window)], zero[(..., *window)], box)) == (
        pytest.approx(float(masked(fixed, changed, zero, (box[0], box[1], slice(4, 14)))), abs=1e-6)
    )


def test_native_rso_compares_the_box_only_inside_the_fit_mask(known_pair):
    fixed, moving, truth = known_pair
    session = session_of(fixed, moving, tiny_net(), grid=TEST_GRID, device="cpu")
    grid = session.grid
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([30.0, 28.0, 12.0]))
    box = session.box_from_lps(centre - 20.0, centre + 20.0)
    problem = build_problem(
        (fixed, moving), box, 10.0, grid, (grid.resample_field(truth), ()), torch.device("cpu")
    )
    # The fit mask: the half of the fixed image below the box's centre (LPS x).
    index_x = np.arange(fixed.GetSize()[0])[None, None, :]
    fit_mask = image_like(
        (index_x < 30).astype(np.float32) * np.ones(fixed.GetSize()[::-1], np.float32), fixed
    )
    limited = limit_to_fit_mask(problem, fit_mask)
    inside = limited.fit_mask[problem.box.slices]
    assert inside.any() and not inside.all()
    settings = RSOSettings(similarity="mse", smoothness=0.0, step_mm=0.5, min_gain=0.0, presmooth_mm=0.0)
    # Change the fixed window inside the box but outside the fit mask: only the unmasked similarity sees it.
    outside = np.zeros(problem.window.shape, bool)
    outside[problem.box.slices] = ~inside
    changed = problem.fixed.clone()
    changed[0, :, torch.from_numpy(outside)] += 500.0
    zero = torch.zeros(1, 3, *problem.window.shape)
    for base, blind in ((problem, False), (limited, True)):
        before = float(Refinement(base, settings).similarity(zero))
        after = float(Refinement(replace(base, fixed=changed), settings).similarity(zero))
        assert (after == pytest.approx(before, rel=1e-6)) is blind
    # A box with no voxel in the fit mask has nothing to fit: one line, the session unchanged.
    far = image_like((index_x > 60).astype(np.float32) * np.ones(fixed.GetSize()[::-1], np.float32), fixed)
    with pytest.raises(InputError, match="outside the fit mask") as error:
        limit_to_fit_mask(problem, far)
    assert "\n" not in str(error.value)
    masked = session_of(fixed, moving, tiny_net(), grid=SMALL_GRID, device="cpu", fit_mask=far)
    with pytest.raises(InputError, match="outside the fit mask"):
        masked.rso(masked.box_from_lps(centre - 20.0, centre + 20.0), RSOSettings())
    assert masked.history == []


def test_a_fit_mask_off_the_fixed_image_is_a_one_line_error(known_pair, tmp_path):
    fixed, moving, _ = known_pair
    elsewhere = image_like(np.ones(fixed.GetSize()[::-1], np.uint8), fixed)
    elsewhere.SetOrigin((np.array(fixed.GetOrigin()) + 2000.0).tolist())
    with pytest.raises(InputError, match="fit mask does not overlap the fixed image") as error:
        session_of(fixed, moving, tiny_net(), grid=SMALL_GRID, device="cpu", fit_mask=elsewhere)
    assert "\n" not in str(error.value)
    inputs = PairInputs(
        fixed=write(fixed, tmp_path / "f.nii.gz"),
        moving=write(moving, tmp_path / "m.nii.gz"),
        fit_mask=write(elsewhere, tmp_path / "mask.nii.gz"),
    )
    job = RegisterJob(
        inputs,
        str(tmp_path / "out"),
        engine=EngineSettings(channels=TINY_CHANNELS, grid=SMALL_GRID, device="cpu"),
    )
    with pytest.raises(InputError, match="fit mask does not overlap"):
        job.prepare()
    assert not (tmp_path / "out").exists()


def test_mask_still_works_as_the_metrics_mask_and_warns(caplog):
    from rso.cli import build_parser
    from rso.cli.register import metrics_mask_from_args

    parser = build_parser()
    base = ["register", "--fixed", "f.nii", "--moving", "m.nii", "--out", "o"]
    args = parser.parse_args([*base, "--metrics-mask", "body.nii", "--fit-mask", "lungs.nii"])
    with caplog.at_level(logging.WARNING):
        assert metrics_mask_from_args(args) == "body.nii" and args.fit_mask == "lungs.nii"
    assert "deprecated" not in caplog.text
    args = parser.parse_args([*base, "--mask", "body.nii"])
    with caplog.at_level(logging.WARNING):
        assert metrics_mask_from_args(args) == "body.nii" and args.fit_mask is None
    assert "--mask is deprecated" in caplog.text
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args([*base, "--mask", "a.nii", "--metrics-mask", "b.nii"])


def test_the_worker_opens_a_session_with_a_fit_mask(one_sided_pair, tmp_path):
    from rso.service.protocol import COMMANDS, FILE_ARGUMENTS, check_args
    from rso.service.sessions import new_session

    fixed, moving, _, fit_mask = one_sided_pair
    assert "fit_mask" in COMMANDS["open"] and "fit_mask" in FILE_ARGUMENTS
    check_args("open", {"fixed": "f.nii.gz", "moving": "m.nii.gz", "fit_mask": "lungs.nii.gz"})
    paths = {
        name: write(image, tmp_path / f"{name}.nii.gz")
        for name, image in (("fixed", fixed), ("moving", moving), ("fit_mask", fit_mask))
    }
    session = new_session(
        {**paths, "channels": list(TINY_CHANNELS), "grid": list(SMALL_GRID), "device": "cpu"}
    )
    assert session.pair.fit_grid is not None and not session.pair.fit_grid.all()


# ------------------------------------------------------------------------------ non-CT intensities
def eight_bit(ct: sitk.Image) -> sitk.Image:
    """The CT as a 0-255 volume (a PNG stack, an ultrasound export): nothing below -200."""
    values = np.clip((sitk.GetArrayFromImage(ct) + 1000.0) / 1400.0 * 255.0, 0, 255).round()
    return image_like(values.astype(np.float32), ct)


def test_a_non_ct_image_spans_the_networks_input_range(chest_ct):
    image = eight_bit(chest_ct)
    with pytest.raises(InputError, match="--allow-non-ct"):
        Normalisation.choose(image, image, allow_non_ct=False)
    normalisation = Normalisation.choose(image, chest_ct, allow_non_ct=True)
    assert normalisation.moving is None  # the CT keeps the HU formula
    values = sitk.GetArrayFromImage(image)
    low, high = np.percentile(values, NON_CT_PERCENTILES)
    assert normalisation.fixed == (low, high)
    assert normalise(np.float32(low), normalisation.fixed) == 0.0
    assert normalise(np.float32(high), normalisation.fixed) == 1.0
    # The HU formula would have used an eighth of the range.
    assert np.ptp(normalise(values)) < 0.14
    session = session_of(
        image,
        image,
        tiny_net(),
        grid=SMALL_GRID,
        device="cpu",
        normalisation=Normalisation.choose(image, image, allow_non_ct=True),
    )
    network_input = session.pair.fixed_t.numpy()
    assert session.pair.fixed_t.dtype == torch.float32
    assert np.percentile(network_input, 0.5) == pytest.approx(0.0, abs=0.05)
    assert np.percentile(network_input, 99.5) == pytest.approx(1.0, abs=0.05)


def test_a_ct_is_normalised_exactly_as_before(chest_ct, tmp_path):
    engine = EngineSettings(channels=TINY_CHANNELS, grid=SMALL_GRID, device="cpu")
    session = start_session(engine, {"fixed": chest_ct, "moving": chest_ct})
    assert session.pair.normalisation == Normalisation()
    expected = torch.from_numpy((session.fixed_hu + 1000.0) / 2000.0)[None, None]  # the paper's formula
    assert torch.equal(session.pair.fixed_t, expected)
    assert torch.equal(
        session.pair.moving_t, torch.from_numpy((session.moving_hu + 1000.0) / 2000.0)[None, None]
    )
    hu = np.linspace(-1024, 3071, 101, dtype=np.float32)
    np.testing.assert_array_equal(normalise(hu), (hu + 1000.0) / 2000.0)


def test_a_reopened_non_ct_session_normalises_the_same_way(chest_ct, one_sided_pair, tmp_path):
    image = eight_bit(chest_ct)
    engine = EngineSettings(channels=TINY_CHANNELS, grid=SMALL_GRID, device="cpu", allow_non_ct=True)
    session = start_session(
        engine, {"fixed": image, "moving": image, "fit_mask": one_sided_pair[3]}, tmp_path / "s"
    )
    session.general()
    manifest = json.loads((tmp_path / "s" / "session.json").read_text())
    assert manifest["normalisation"]["fixed"] == list(session.pair.normalisation.fixed)
    assert "fit_mask" in manifest["inputs"]
    reopened = RegistrationSession.open(tmp_path / "s", device="cpu")
    assert reopened.pair.normalisation == session.pair.normalisation
    # The same inputs up to float rounding (the stored image is int16, the given one float32).
    torch.testing.assert_close(reopened.pair.fixed_t, session.pair.fixed_t, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(reopened.pair.fit_grid, session.pair.fit_grid)
    # A manifest from before the choice was kept reopens with the HU formula.
    assert Normalisation.from_dict(None) == Normalisation()


@pytest.mark.parametrize("mode", ["crop", "direct"])
def test_rso_on_a_window_takes_the_fit_mask_cropped_alike(one_sided_pair, mode):
    losses = []
    for fit_mask in (None, one_sided_pair[3]):
        session = session_on(one_sided_pair, fit_mask=fit_mask)
        centre = np.array(one_sided_pair[0].TransformContinuousIndexToPhysicalPoint([25.0, 32.0, 24.0]))
        box = session.box_from_lps(centre - 25.0, centre + 25.0)
        losses.append(session.rso(box, RSOSettings(iterations=2, mode=mode)).loss)
    assert losses[1][0] < 0.1 * losses[0][0]  # inside the mask the images agree already
