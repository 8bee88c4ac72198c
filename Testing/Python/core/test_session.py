"""The session on real chest CT anatomy with a known field: quality, locality, undo, cancel, reopen."""

import threading

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TEST_GRID, session_of

from rso.core.model import PAPER_CHANNELS, ModelConfig, RegistrationNet, parameter_count
from rso.core.optimize import CancelToken
from rso.core.session import RegistrationSession
from rso.errors import Cancelled, InputError
from rso.settings import RSOSettings

# Around the local bump of the known field (rso.simulation.phantom.breathing_like_field): fixed-image voxels.
BUMP_BOX_IJK = [36, 21, 19, 54, 39, 33]


def test_paper_architecture_shapes_and_parameter_count():
    import torch

    net = RegistrationNet(ModelConfig())
    assert net.config.channels == PAPER_CHANNELS == (16, 32, 64, 128, 256)
    assert parameter_count(net) == 4_808_346
    fixed = torch.zeros(1, 1, 32, 64, 64)
    displacement = net(fixed, fixed)
    assert displacement.shape == (1, 3, 32, 64, 64)
    assert float(displacement.detach().abs().max()) < 1e-2  # starts at (near) identity
    assert net.warp(fixed, displacement).shape == fixed.shape


def test_iso_lowers_tre_against_truth(make_session):
    session = make_session(grid=TEST_GRID)
    general = session.general()
    iso = session.iso(40)
    assert len(iso.loss) == 40 and iso.loss[-1] < iso.loss[0]
    assert iso.metrics["tre_mm"]["mean"] < 0.8 * general.metrics["tre_mm"]["mean"]
    assert iso.metrics["rmse_hu"] < general.metrics["rmse_hu"]


def test_iso_fades_its_change_towards_the_ends_of_the_body_axis(make_session, tiny_net):
    """``--iso-end-fade``: the same fine-tuning, its change from the start scaled by d / fade, d how far
    inside the model grid's z axis the start field carries each voxel (mm); untouched further in."""
    import copy

    from rso.settings import ISOSettings

    changes = []
    for fade_mm in (0.0, 40.0):
        session = make_session(grid=TEST_GRID, net=copy.deepcopy(tiny_net))
        session.general()
        start = session.state.field.copy()  # (3, z, y, x) voxels, (dz, dy, dx)
        session.iso(ISOSettings(iterations=3, guard=False, end_fade_mm=fade_mm))
        changes.append(session.state.field - start)
    count = session.grid.shape[0]
    carried = np.arange(count)[:, None, None] + start[0]
    inside_mm = (np.minimum(carried, count - 1 - carried) + 0.5) * session.grid.spacing[2]
    weight = np.clip(inside_mm / 40.0, 0.0, 1.0)
    assert 0 < weight.min() < 1 and weight.max() == 1.0
    np.testing.assert_allclose(changes[1], weight[None] * changes[0], atol=1e-5)
    assert np.abs(changes[0]).max() > 1e-3


def test_iso_end_fade_must_not_be_negative():
    from rso.settings import ISOSettings

    with pytest.raises(InputError, match="end fade mm must be >= 0"):
        ISOSettings(end_fade_mm=-1.0)


def test_rso_improves_the_box_more_than_the_same_extra_iso(make_session):
    session = make_session(grid=TEST_GRID)
    session.general()
    session.iso(30)
    box = session.box_from_fixed_index(BUMP_BOX_IJK)
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    rso = session.rso(box, RSOSettings(iterations=40, mode="full", compose="global"))
    session.undo()
    session.iso(40)
    more_iso = session.metrics(box=box)["tre_mm_box"]["mean"]
    assert rso.metrics["tre_mm_box"]["mean"] < before
    assert rso.metrics["tre_mm_box"]["mean"] < more_iso


@pytest.mark.parametrize("mode", ["full", "crop", "direct"])
def test_local_composition_leaves_the_outside_exactly_unchanged(make_session, mode):
    session = make_session(grid=TEST_GRID)
    session.general()
    session.iso(5)
    before = session.field_voxels.copy()
    box = session.box_from_fixed_index(BUMP_BOX_IJK)
    settings = RSOSettings(iterations=10, mode=mode, compose="local", blend_margin_mm=10)
    record = session.rso(box, settings)
    around = box.voxels.expanded(session.blend_margin_voxels(10), session.grid.shape)
    outside = ~around.mask(session.grid.shape)
    assert record.metrics["outside_change_mm"] == 0.0
    np.testing.assert_array_equal(session.field_voxels[:, outside], before[:, outside])
    assert not np.array_equal(
        session.field_voxels[(slice(None), *box.voxels.slices)], before[(slice(None), *box.voxels.slices)]
    )


def test_global_composition_changes_the_outside(make_session):
    session = make_session(grid=TEST_GRID)
    session.general()
    box = session.box_from_fixed_index(BUMP_BOX_IJK)
    record = session.rso(box, RSOSettings(iterations=10, mode="full", compose="global"))
    assert record.metrics["outside_change_mm"] > 0


def test_undo_restores_field_and_weights_bit_for_bit(make_session, tmp_path):
    session = make_session(grid=TEST_GRID, folder=tmp_path / "s")
    session.general()
    session.iso(5)
    field, weights = session.field_voxels.copy(), {k: v.clone() for k, v in session.net.state_dict().items()}
    session.rso(
        session.box_from_fixed_index(BUMP_BOX_IJK), RSOSettings(iterations=5, mode="full", compose="global")
    )
    session.iso(3)
    assert session.undo().kind == "iso"
    assert session.undo().kind == "rso"
    np.testing.assert_array_equal(session.field_voxels, field)
    for key, value in session.net.state_dict().items():
        assert (value == weights[key]).all(), key
    assert [r.kind for r in session.history] == ["general", "iso"]
    assert not (tmp_path / "s" / "states" / "0003").exists()


def test_cancel_mid_rso_changes_nothing(make_session, tmp_path):
    session = make_session(grid=TEST_GRID, folder=tmp_path / "s")
    session.general()
    field = session.field_voxels.copy()
    manifest = (tmp_path / "s" / "session.json").read_bytes()
    cancel = CancelToken()
    seen = []

    def progress(update):
        seen.append(update)
        if update.iteration == 3:
            threading.Thread(target=cancel.cancel).start()

    with pytest.raises(Cancelled):
        session.rso(
            session.box_from_fixed_index(BUMP_BOX_IJK),
            RSOSettings(iterations=200, mode="full", compose="global"),
            progress=progress,
            cancel=cancel,
        )
    assert 3 <= len(seen) < 200 and seen[0].eta > 0
    np.testing.assert_array_equal(session.field_voxels, field)
    assert len(session.history) == 1
    assert (tmp_path / "s" / "session.json").read_bytes() == manifest


def test_reopened_session_equals_the_saved_one(make_session, tmp_path):
    session = make_session(grid=TEST_GRID, folder=tmp_path / "s")
    session.general()
    session.iso(4)
    session.rso(
        session.box_from_fixed_index(BUMP_BOX_IJK), RSOSettings(iterations=4, mode="crop", compose="local")
    )
    reopened = RegistrationSession.open(tmp_path / "s", device="cpu")
    np.testing.assert_array_equal(reopened.field_voxels, session.field_voxels)
    assert [r.to_dict() for r in reopened.history] == [r.to_dict() for r in session.history]
    for key, value in reopened.net.state_dict().items():
        assert (value == session.net.state_dict()[key]).all()
    reopened.undo()  # the older states come back from disk
    assert len(reopened.history) == 2
    reopened.iso(2)  # and the session goes on
    assert RegistrationSession.open(tmp_path / "s").history[-1].kind == "iso"


@pytest.mark.parametrize("precision, tolerance_voxels", [("fp32", 0.0), ("bf16", 0.1)])
def test_same_seed_repeats_on_cpu(known_pair, precision, tolerance_voxels):
    """fp32 repeats bit for bit; bf16's kernels are not deterministic, so its repeats only agree closely."""
    import torch

    fixed, moving, _ = known_pair
    fields = []
    for _ in range(2):
        torch.manual_seed(7)  # the untrained network's weights
        net = RegistrationNet(ModelConfig(channels=(4, 8, 16, 32, 64)))
        session = session_of(fixed, moving, net, grid=TEST_GRID, seed=3, device="cpu", precision=precision)
        session.iso(3)
        fields.append(session.field_voxels)
    np.testing.assert_allclose(*fields, rtol=0, atol=tolerance_voxels)


@pytest.mark.parametrize("stored", ["RAS", "PSL"])
def test_the_general_model_sees_the_same_chest_however_the_files_store_it(known_pair, stored):
    """The bundled general model on a real CT pair: the same field when both files store the voxels in
    another order (RAS as many NIfTI converters write it, PSL a sagittal stack). While the model grid
    followed the file's axes a RAS-stored training pair lost 5 mm (bench/sweep/orientation/)."""
    from rso.core.workflow import build_network
    from rso.settings import EngineSettings

    fixed, moving, truth = known_pair
    results = []
    for images in ((fixed, moving), tuple(sitk.DICOMOrient(image, stored) for image in (fixed, moving))):
        net, _ = build_network(EngineSettings())
        session = session_of(*images, net, truth=truth, device="cpu", precision="fp32")
        general = session.general()
        results.append((general.metrics["tre_mm"]["mean"], session.field_mm))
    (tre, field), (stored_tre, stored_field) = results
    assert stored_tre == pytest.approx(tre, abs=0.01)
    np.testing.assert_allclose(stored_field, field, atol=0.01)


def test_images_without_physical_overlap_are_refused(known_pair, tiny_net):
    fixed, moving, _ = known_pair
    far = sitk.Image(moving)
    far.SetOrigin([o + 5000 for o in moving.GetOrigin()])
    with pytest.raises(InputError, match="do not overlap"):
        session_of(fixed, far, tiny_net, grid=TEST_GRID)


def test_evaluation_mask_restricts_the_metrics(known_pair, tiny_net):
    from rso.core.metrics import target_registration_error

    fixed, moving, truth = known_pair
    body = sitk.Cast(sitk.BinaryThreshold(fixed, -500, 5000), sitk.sitkUInt8)
    session = session_of(fixed, moving, tiny_net, grid=TEST_GRID, truth=truth, mask=body, device="cpu")
    metrics = session.general().metrics
    mask = session.evaluation_mask
    assert 0.05 < mask.mean() < 0.95
    expected = target_registration_error(session.field_mm, session.truth_mm, mask)
    assert metrics["tre_mm"] == expected
    unmasked = target_registration_error(session.field_mm, session.truth_mm)
    assert metrics["tre_mm"]["mean"] != unmasked["mean"]


def test_direct_field_rso_improves_the_box_and_keeps_the_weights(make_session):
    session = make_session(grid=TEST_GRID)
    session.general()
    box = session.box_from_fixed_index(BUMP_BOX_IJK)
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    weights = {k: v.clone() for k, v in session.net.state_dict().items()}
    record = session.rso(box, RSOSettings(iterations=60, mode="direct", compose="local"))
    assert record.metrics["tre_mm_box"]["mean"] < 0.8 * before
    assert record.metrics["outside_change_mm"] == 0.0
    assert all((v == weights[k]).all() for k, v in session.net.state_dict().items())
    with pytest.raises(InputError, match="use composition local"):
        RSOSettings(mode="direct", compose="global")


def test_a_step_that_diverges_in_bf16_is_repeated_in_fp32(make_session, monkeypatch):
    import torch

    session = make_session(grid=TEST_GRID, precision="bf16")
    assert session.precision == "bf16"
    forward = type(session.net).forward

    def overflowing_in_bf16(net, fixed, moving):  # fault injection: bf16 arithmetic gives NaN
        displacement = forward(net, fixed, moving)
        return displacement * torch.nan if net.bf16 else displacement

    monkeypatch.setattr(type(session.net), "forward", overflowing_in_bf16)
    record = session.iso(3)
    assert record.params["precision"] == "fp32 (bf16 diverged)"
    assert len(session.history) == 1 and np.isfinite(record.loss).all()
    assert np.isfinite(session.field_voxels).all()
    assert session.precision == "bf16" and session.net.bf16  # only that step ran in fp32


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(make_session):
    from rso.core.model import native_bf16

    session = make_session(grid=TEST_GRID, precision="auto")
    assert session.precision == ("bf16" if native_bf16(session.device) else "fp32")


def test_automatic_boxes_lie_in_the_evaluation_region(known_pair, tiny_net):
    from rso.evaluation.box_kinds import worst_residual_boxes

    fixed, moving, _ = known_pair
    region = sitk.Image(fixed.GetSize(), sitk.sitkUInt8)
    region.CopyInformation(fixed)
    size = fixed.GetSize()
    region[:, :, : size[2] // 3] = 1  # only the lowest third of the slices counts
    session = session_of(fixed, moving, tiny_net, grid=TEST_GRID, mask=region, device="cpu")
    session.general()
    boxes = worst_residual_boxes(session, 2, size_mm=30.0)
    assert len(boxes) == 2
    for box in boxes:
        centre = [(lo + hi - 1) // 2 for lo, hi in zip(box.voxels.lo, box.voxels.hi)]
        assert session.evaluation_mask[tuple(centre)]
    first, second = (box.voxels for box in boxes)
    assert any(first.hi[k] <= second.lo[k] or second.hi[k] <= first.lo[k] for k in range(3))  # no overlap


def test_a_truth_is_held_and_kept_in_float32_with_the_same_metrics(known_pair, tiny_net, tmp_path):
    """A truth is only compared and resampled: float32 halves what a session holds (1.2 GB at 1 mm)."""
    from conftest import write

    from rso.core.inputs import read_inputs
    from rso.settings import PairInputs

    fixed, moving, truth = known_pair
    path = write(sitk.Cast(truth, sitk.sitkVectorFloat64), tmp_path / "truth.nii.gz")
    inputs = read_inputs(
        PairInputs(
            fixed=write(fixed, tmp_path / "f.nii.gz"), moving=write(moving, tmp_path / "m.nii.gz"), truth=path
        )
    )
    assert inputs["truth"].GetPixelID() == sitk.sitkVectorFloat32
    held = session_of(inputs["fixed"], inputs["moving"], tiny_net, tmp_path / "s", truth=inputs["truth"])
    double = session_of(fixed, moving, tiny_net, truth=sitk.Cast(truth, sitk.sitkVectorFloat64))
    np.testing.assert_allclose(held.truth_mm, double.truth_mm, atol=1e-5)
    held.general()
    double.general()
    assert held.metrics()["tre_mm"]["mean"] == pytest.approx(double.metrics()["tre_mm"]["mean"], abs=1e-4)
    reopened = RegistrationSession.open(tmp_path / "s", device="cpu")
    assert reopened.pair.truth.GetPixelID() == sitk.sitkVectorFloat32
    np.testing.assert_array_equal(reopened.truth_mm, held.truth_mm)
