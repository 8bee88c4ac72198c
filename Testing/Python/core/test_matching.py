"""Artefact matching (rso.core.projection.matching): phase-binned CBCTs seen through both phases'
projection geometries, on real anatomy: the parallel-beam fast preset, and RTK's cone beam."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import TEST_GRID, session_of, write
from test_native import _untrained, constant_field, lung_box

from rso.core import runners
from rso.core.inputs import read_inputs
from rso.core.iso_guard import given_gain, lung_axis_share
from rso.core.native import Refinement, build_problem
from rso.core.projection.geometry import ProjectionGeometry, read_geometry, write_geometry
from rso.core.projection.matching import NO_GEOMETRY, match_artefacts
from rso.core.session import RegistrationSession
from rso.errors import InputError
from rso.settings import ISOSettings, PairInputs, RSOSettings
from rso.simulation.cbct import CBCTParams, phase_geometry, simulate_cbct

# 25 views per phase bin of 10, as the simulator's clinical preset; the moving image from phase 5, whose views
# fall half-way between the fixed image's: the two sets' streaks differ most.
SPARSE = CBCTParams(projections=250, photons_per_mm2=0.0)
MOVING_PHASE = 5
SHIFT_MM = (2.0, -3.0, 4.0)  # LPS


def cbct(ct: sitk.Image, phase: int) -> sitk.Image:
    return simulate_cbct(ct, phase, 10, SPARSE)


def test_the_parallel_geometries_of_two_phases_are_the_same_directions_rotated():
    first, other = phase_geometry(0, 10, SPARSE), phase_geometry(MOVING_PHASE, 10, SPARSE)
    assert first.count == other.count == 25 and first.is_parallel
    np.testing.assert_allclose(np.subtract(other.gantry_deg, first.gantry_deg), MOVING_PHASE * 180 / 250)


@pytest.fixture(scope="module")
def shifted_sparse_pair(chest_ct):
    """fixed(x) = moving(x + SHIFT): two phases' CBCTs (25 views each), the truth a constant field."""
    from rso.simulation.phantom import pair_from_field

    pair = pair_from_field(chest_ct, constant_field(chest_ct, SHIFT_MM))
    return cbct(pair.fixed, 0), cbct(chest_ct, MOVING_PHASE), pair.truth


def _session(pair, views: bool, **options) -> RegistrationSession:
    fixed, moving, truth = pair
    geometries = phase_geometry(0, 10, SPARSE), phase_geometry(MOVING_PHASE, 10, SPARSE)
    extra = {"fixed_geometry": geometries[0], "moving_geometry": geometries[1]} if views else {}
    return session_of(
        fixed, moving, _untrained(), grid=TEST_GRID, truth=truth, device="cpu", **extra, **options
    )


def test_on_matched_images_the_box_prefers_the_true_shift_and_a_search_finds_it(shifted_sparse_pair):
    """The box's similarity explains far more at the true shift once both images carry both views' streaks."""
    session = _session(shifted_sparse_pair, views=True)
    box = lung_box(session)
    gains, found = {}, {}
    for matched in (False, True):
        problem = build_problem(
            session.compared_images(matched),
            box,
            15.0,
            session.grid,
            (session.grid.voxels_to_mm(session.state.field), ()),
            torch.device("cpu"),
        )
        refinement = Refinement(problem, RSOSettings(min_gain=0.0))
        truth = torch.tensor(SHIFT_MM).view(1, 3, 1, 1, 1).expand(1, 3, *problem.window.shape)
        with torch.no_grad():
            gains[matched] = 1 - float(
                refinement.similarity(truth) / refinement.similarity(torch.zeros_like(truth))
            )
        found[matched] = np.linalg.norm(refinement.search_translation() - SHIFT_MM)
    assert gains[True] > gains[False] + 0.2, gains
    assert found[True] < 0.5 < found[False], found


def test_native_rso_on_matched_images_recovers_a_known_shift_and_says_so(shifted_sparse_pair, tmp_path):
    session = _session(shifted_sparse_pair, views=True)
    box = lung_box(session)
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    record = session.rso(box, RSOSettings(mode="native"))
    assert record.accepted, record.declined
    assert record.params["artefacts_matched"] is True
    assert record.metrics["tre_mm_box"]["mean"] < 0.3 * before
    # Checked on the images as given (not a second opinion), whether or not the step may return.
    assert record.guard["unfitted_gain"] is not None and record.guard["disagreement_mm"] is None
    session.undo()
    no_return = session.rso(box, RSOSettings(mode="native", returns=False)).guard
    assert no_return["unfitted_gain"] is not None and no_return["disagreement_mm"] is None
    session.attach_folder(tmp_path / "session")
    reopened = RegistrationSession.open(tmp_path / "session", device="cpu")
    assert reopened.geometry == session.geometry


def test_matching_is_off_without_geometry_or_when_asked(shifted_sparse_pair):
    without = _session(shifted_sparse_pair, views=False)
    assert (
        without.pair.matching_status(True) == NO_GEOMETRY == "artefact matching off: no projection geometry"
    )
    assert (
        without.rso(lung_box(without), RSOSettings(mode="native", min_gain=0.0)).params["artefacts_matched"]
        is False
    )
    declined = _session(shifted_sparse_pair, views=True)
    record = declined.rso(lung_box(declined), RSOSettings(mode="native", min_gain=0.0, match_artefacts=False))
    assert record.params["artefacts_matched"] is False


def test_iso_fine_tunes_on_the_matched_pair_where_both_views_are_known(shifted_sparse_pair):
    """ISO trains and predicts on what native RSO compares; without views, or when asked not to, on the
    inputs."""
    matched, raw, asked = (
        _session(shifted_sparse_pair, views=v, precision="fp32") for v in (True, False, True)
    )
    unguarded = ISOSettings(iterations=2, guard=False)
    records = matched.iso(unguarded), raw.iso(unguarded), asked.iso(replace(unguarded, match_artefacts=False))
    assert [r.params["artefacts_matched"] for r in records] == [True, False, False]
    np.testing.assert_allclose(asked.field_voxels, raw.field_voxels, atol=1e-5)
    assert np.abs(matched.field_voxels - raw.field_voxels).max() > 1e-3  # trained on other images


def test_the_images_as_given_prefer_the_true_field_to_none_and_to_its_opposite(shifted_sparse_pair):
    session = _session(shifted_sparse_pair, views=True)
    given, warp = session.pair.network_inputs(False), session.net.warp
    true = torch.from_numpy(session.grid.mm_to_voxels(session.truth_mm)).float()[None]
    zero = torch.zeros_like(true)
    assert given_gain(warp, given, zero, true) > 0.1
    assert given_gain(warp, given, zero, -true) < 0.0
    assert given_gain(warp, given, zero, zero) == 0.0


def test_iso_keeps_its_field_only_where_the_images_as_given_agree_better(shifted_sparse_pair, monkeypatch):
    """ISO's guard (rso.core.iso_guard): a field the images as given do not prefer leaves the state as it
    was, with the gain in the record; one they prefer is ISO's own field, as without the guard."""
    first, second, free = (_session(shifted_sparse_pair, views=True, precision="fp32") for _ in range(3))
    first.general()
    before, weights = first.field_voxels.copy(), {k: v.clone() for k, v in first.net.state_dict().items()}
    monkeypatch.setattr(runners, "ISO_MIN_GIVEN_GAIN", 1.0)  # no field removes all dissimilarity
    record = first.iso(2)
    assert record.params["kept"] == "start" and record.params["given_gain"] < 1.0
    np.testing.assert_array_equal(first.field_voxels, before)
    assert all(torch.equal(v, weights[k]) for k, v in first.net.state_dict().items())
    monkeypatch.setattr(runners, "ISO_MIN_GIVEN_GAIN", -np.inf)
    second.general(), free.general()
    kept, unguarded = second.iso(2), free.iso(ISOSettings(iterations=2, guard=False))
    assert "kept" not in kept.params and "given_gain" in kept.params and "given_gain" not in unguarded.params
    np.testing.assert_allclose(second.field_voxels, free.field_voxels, atol=1e-6)
    assert np.abs(second.field_voxels - before).max() > 1e-3


def test_a_network_step_fits_the_matched_pair_and_must_hold_on_the_images_as_given(shifted_sparse_pair):
    """On a matched session a network step fits the artefact-matched pair, as ISO does, and must explain
    min_unfitted_gain of the box's difference on the images as given (runners.network_guard), else it is
    declined and the session stays as it was; asked not to match, it fits the images as given and is
    judged on the matched pair. Without both geometries there is no second pair and no guard."""
    step = {"mode": "direct", "compose": "local", "iterations": 3}
    session = _session(shifted_sparse_pair, views=True, precision="fp32")
    box, before = lung_box(session), session.field_voxels.copy()
    declined = session.rso(box, RSOSettings(**step, min_unfitted_gain=0.99))
    assert declined.declined.startswith("the step does not hold on the images as given")
    assert declined.guard["unfitted_gain"] < 0.99 and not session.history
    np.testing.assert_array_equal(session.field_voxels, before)
    kept = session.rso(box, RSOSettings(**step, min_unfitted_gain=-1e9))
    assert kept.accepted and kept.guard == declined.guard and kept.params["artefacts_matched"] is True
    start, proposed = (torch.from_numpy(f)[None] for f in (before, session.field_voxels))
    mask = torch.zeros_like(session.pair.fixed_t)
    mask[(..., *box.voxels.slices)] = 1.0
    gain = given_gain(session.net.warp, session.pair.network_inputs(False), start, proposed, mask)
    assert kept.guard["unfitted_gain"] == pytest.approx(gain, abs=1e-4)
    session.undo()
    on_given = session.rso(box, RSOSettings(**step, match_artefacts=False, min_unfitted_gain=0.99))
    assert on_given.declined.startswith("the step does not hold on the artefact-matched images")
    without = _session(shifted_sparse_pair, views=False, precision="fp32")
    unjudged = without.rso(lung_box(without), RSOSettings(**step, min_unfitted_gain=0.99))
    assert unjudged.accepted and unjudged.guard is None and unjudged.params["artefacts_matched"] is False


def test_geometry_files_are_read_and_bad_ones_refused_in_one_line(tmp_path, chest_ct):
    good = write_geometry(phase_geometry(3, 10, SPARSE), tmp_path / "geometry.xml")
    assert read_geometry(good) == phase_geometry(3, 10, SPARSE)
    bad = {"not-xml.xml": "<RTKThreeD", "empty.xml": "", "other.xml": "<Something/>"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError) as error:
            read_geometry(tmp_path / name)
        assert "\n" not in str(error.value) and name in str(error.value), name
    image = write(chest_ct, tmp_path / "ct.nii.gz")
    inputs = read_inputs(PairInputs(fixed=image, moving=image, fixed_geometry=str(good)))
    with pytest.raises(InputError, match="both images"):
        session_of(net=_untrained(), **inputs, grid=TEST_GRID, device="cpu")
    cone = ProjectionGeometry.circular(1000.0, 1536.0, np.linspace(0, 350, 36))
    with pytest.raises(InputError, match="parallel beam"):
        session_of(
            fixed=chest_ct,
            moving=chest_ct,
            net=_untrained(),
            grid=TEST_GRID,
            device="cpu",
            fixed_geometry=phase_geometry(3, 10, SPARSE),
            moving_geometry=cone,
        )


def test_an_older_case_gets_its_geometry_from_case_json(tmp_path):
    from rso.simulation.simulate import geometry_path

    (tmp_path / "case.json").write_text(json.dumps({"phases": 10, "cbct": {"projections": 250}}))
    path = geometry_path(tmp_path, 3)
    assert read_geometry(path) == phase_geometry(3, 10, CBCTParams(projections=250))
    assert geometry_path(tmp_path / "not-a-case", 3) is None


def _clustered(first_deg: float) -> ProjectionGeometry:
    """A cone-beam phase bin: clusters of 4 views 1.5 degrees apart, one per breath, 30 degrees apart."""
    angles = [first_deg + start + 1.5 * k for start in np.arange(0, 360, 30) for k in range(4)]
    return ProjectionGeometry.circular(1000.0, 1536.0, angles)


def _small(image: sitk.Image, shape=(48, 48, 32)) -> sitk.Image:
    spacing = [s * n / m for s, n, m in zip(image.GetSpacing(), image.GetSize(), shape)]
    return sitk.Resample(
        image,
        shape,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        -1000.0,
    )


def test_cone_beam_matching_is_symmetric_and_cached(chest_ct):
    """Each image through the other's cone-beam geometry (RTK): swapping the pair swaps the answer, the
    matched images carry the other geometry's streaks, and a session computes them once."""
    small = _small(chest_ct)
    moved = sitk.Resample(
        small, small, sitk.TranslationTransform(3, (3.0, 0.0, 2.0)), sitk.sitkLinear, -1000.0
    )
    geometries = _clustered(0.0), _clustered(11.0)
    forward = match_artefacts(small, moved, geometries)
    backward = match_artefacts(moved, small, geometries[::-1])
    for a, b in zip(forward, backward[::-1]):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    inside = sitk.GetArrayFromImage(small) > -500
    streaks = [
        np.std(sitk.GetArrayFromImage(m)[inside] - sitk.GetArrayFromImage(i)[inside])
        for m, i in zip(forward, (small, moved))
    ]
    assert all(10 < s < 500 for s in streaks), streaks  # the other geometry's streaks, neither none nor chaos
    session = session_of(
        small,
        moved,
        _untrained(),
        grid=TEST_GRID,
        device="cpu",
        fixed_geometry=geometries[0],
        moving_geometry=geometries[1],
    )
    assert session.pair.matching_status(True).startswith("artefact matching on: cone beam, 48 and 48 views")
    first = session.compared_images(True)
    seconds = session.pair.matching_seconds
    assert session.compared_images(True) is first and session.pair.matching_seconds == seconds
    for a, b in zip(first, forward):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_a_native_step_with_both_geometries_is_judged_by_its_axis_share(shifted_sparse_pair):
    """With both geometries a native step's verdict holds its share along the rotation axis (the image's
    superior axis in the default placement); a share below ``min_axis_share`` declines it with why and
    leaves the session as it was. Without geometries the share is not judged."""
    session = _session(shifted_sparse_pair, views=True, precision="fp32")
    np.testing.assert_allclose(session.pair.rotation_axis(), [0.0, 0.0, 1.0], atol=1e-12)
    box, before = lung_box(session), session.field_voxels.copy()
    settings = RSOSettings(iterations=10, returns=False, min_gain=0.0, min_unfitted_gain=-1e9)
    declined = session.rso(box, replace(settings, min_axis_share=1.0))
    assert "across the scanner's rotation axis" in declined.declined and not session.history
    assert 0.0 <= declined.guard["axis_share"] < 1.0
    np.testing.assert_array_equal(session.field_voxels, before)
    without = _session(shifted_sparse_pair, views=False, precision="fp32")
    assert without.pair.rotation_axis() is None
    assert without.rso(lung_box(without), settings).guard["axis_share"] is None


def test_iso_without_projection_geometry_keeps_its_field_only_along_the_body(
    shifted_sparse_pair, monkeypatch
):
    """Without geometry files ISO's guard is the axis share of its change in the lungs
    (rso.core.iso_guard.lung_axis_share): below ISO_MIN_AXIS_SHARE the state stays as it was, bit for bit,
    with the share in the record; at or above it ISO's own field is kept, as without the guard."""
    first, second, free = (_session(shifted_sparse_pair, views=False, precision="fp32") for _ in range(3))
    first.general()
    before, weights = first.field_voxels.copy(), {k: v.clone() for k, v in first.net.state_dict().items()}
    monkeypatch.setattr(runners, "ISO_MIN_AXIS_SHARE", 1.01)  # no change lies wholly along the axis
    record = first.iso(2)
    assert record.params["kept"] == "start" and 0.0 <= record.params["axis_share"] <= 1.0
    np.testing.assert_array_equal(first.field_voxels, before)
    assert all(torch.equal(v, weights[k]) for k, v in first.net.state_dict().items())
    monkeypatch.setattr(runners, "ISO_MIN_AXIS_SHARE", 0.0)
    second.general(), free.general()
    kept, unguarded = second.iso(2), free.iso(ISOSettings(iterations=2, guard=False))
    assert "kept" not in kept.params and "axis_share" in kept.params and "axis_share" not in unguarded.params
    np.testing.assert_allclose(second.field_voxels, free.field_voxels, atol=1e-6)
    assert np.abs(second.field_voxels - before).max() > 1e-3


def test_the_lung_axis_share_measures_the_change_in_the_lungs_along_the_body():
    """1 for a change along the superior-inferior axis, 0 across it, only lung-density voxels counted
    (and only inside the fit mask); None without lungs to judge by."""
    hu = np.full((20, 20, 20), 40.0)
    hu[5:15, 5:15, 5:15] = -800.0  # 1000 voxels of lung
    along, across = np.zeros((20, 20, 20, 3)), np.zeros((20, 20, 20, 3))
    along[..., 2], across[..., 0] = 3.0, 3.0
    across[hu > -300] = (0.0, 0.0, 5.0)  # outside the lungs: not counted
    assert lung_axis_share(along, hu) == pytest.approx(1.0)
    assert lung_axis_share(across, hu) == pytest.approx(0.0)
    assert lung_axis_share(along, np.full_like(hu, 40.0)) is None
    mask = np.zeros_like(hu, bool)
    mask[:, :, :10] = True  # half the lungs: fewer voxels than needed
    assert lung_axis_share(along, hu, mask) is None


def test_iso_says_nothing_guards_it_where_nothing_can_judge_it(shifted_sparse_pair, caplog):
    """Without geometry files and without lungs of CT density in the fit mask to judge its change by, ISO's
    field is kept unjudged: the step's params and the log say so, with what to do for phase-binned CBCT; with
    both files (guard on or off by choice) nothing of the kind is said."""
    fixed = shifted_sparse_pair[0]
    corner = sitk.Image(fixed.GetSize(), sitk.sitkUInt8)
    corner.CopyInformation(fixed)
    rows = fixed.GetSize()[1]
    corner[0:8, rows - 8 : rows, 0:8] = 1  # air in a posterior corner (inside the body's frame): no lungs
    without = _session(shifted_sparse_pair, views=False, precision="fp32", fit_mask=corner)
    without.general()
    with caplog.at_level("WARNING", logger="rso"):
        record = without.iso(2)
    assert record.params["unguarded"] == "no projection geometry; no lungs to judge it by"
    assert any("--iso 0" in message for message in caplog.messages)
    matched = _session(shifted_sparse_pair, views=True, precision="fp32")
    matched.general()
    assert "unguarded" not in matched.iso(ISOSettings(iterations=2, guard=False)).params
