"""Clinical phase-binned 4D CBCT (rso.simulation.breathing, rso.simulation.clinical).

The binning is checked against what an irregular breathing trace implies (one cluster per breath per
bin, gaps of one breath's gantry turn); the acquisition end to end on the analytic chest phantom at
4 mm with a few dozen projections: the images sit on the CT's grid, are finite and close to the CT,
and a phase's clustered views leave more streaks than as many evenly spread views.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from rso.core.projection import (
    Detector,
    Placement,
    ProjectionGeometry,
    fdk,
    forward_project,
    hu_to_mu,
    mu_to_hu,
)
from rso.errors import InputError
from rso.simulation.anatomy import MaskParams
from rso.simulation.breathing import (
    BreathingParams,
    BreathingTrace,
    cluster_gaps,
    clusters,
    phase_bins,
    quantise_instants,
)
from rso.simulation.clinical import (
    PRESETS,
    Acquisition,
    ClinicalMotion,
    Physics,
    ScannerPreset,
    add_noise,
    add_scatter,
    scanner_preset,
    simulate_phases,
)
from rso.simulation.field_of_view import air_outside, scanned_field_of_view
from rso.simulation.motion import BreathingMotion, MotionParams
from rso.simulation.phantom import phantom_pair
from rso.simulation.simulate import SimulationParams, simulate_case

FPS, DURATION_S, PHASES = 5.5, 120.0, 10


@pytest.fixture(scope="module")
def trace() -> BreathingTrace:
    return BreathingTrace.draw(np.arange(int(FPS * DURATION_S)) / FPS, seed=3)


def test_trace_is_seeded_irregular_breathing(trace):
    again = BreathingTrace.draw(trace.times_s, seed=3)
    assert np.array_equal(again.t, trace.t) and np.array_equal(again.a, trace.a)
    assert not np.array_equal(BreathingTrace.draw(trace.times_s, seed=4).t, trace.t)
    assert np.all((trace.t >= 0) & (trace.t < 1))
    periods, amplitudes = trace.periods_s, trace.amplitudes
    assert 3.5 < periods.mean() < 4.5 and 0.08 < periods.std() / periods.mean() < 0.25
    assert 0.85 < amplitudes.mean() < 1.15 and 0.08 < amplitudes.std() / amplitudes.mean() < 0.25
    # t runs 0 -> 1 through each breath, and the signal a * b(t) is continuous across breaths
    assert np.all(np.diff(trace.t)[np.diff(trace.breath) == 0] > 0)
    signal = trace.signal()
    assert signal.min() >= 0 and 0.6 < signal.max() < 2.0
    assert np.abs(np.diff(signal)).max() < 0.5  # b's steepest rise over one frame is about 0.75 a / 5.5
    regular = BreathingTrace.draw(trace.times_s, 0, BreathingParams(period_cv=0.0, amplitude_cv=0.0))
    assert np.allclose(regular.periods_s, 4.0) and np.allclose(regular.a, 1.0)


def test_phase_bins_are_centred_on_k_over_phases():
    t = np.array([0.0, 0.049, 0.051, 0.149, 0.151, 0.5, 0.949, 0.951, 0.999])
    assert phase_bins(t, 10).tolist() == [0, 0, 1, 1, 2, 5, 9, 0, 0]
    with pytest.raises(InputError):
        phase_bins(t, 0)


def test_clustered_binning_matches_the_trace(trace):
    bins = phase_bins(trace.t, PHASES)
    gantry = np.arange(trace.count) * 360.0 / trace.count
    step = gantry[1]
    assert np.bincount(bins, minlength=PHASES).sum() == trace.count
    covered = np.zeros(trace.count, int)
    for k in range(PHASES):
        runs = clusters(bins, k)
        for start, stop in runs:
            covered[start:stop] += 1
            assert np.all(bins[start:stop] == k)
        assert sum(b - a for a, b in runs) == np.sum(bins == k)
        # One cluster per breath through the bin: bin 0 straddles end exhale, so it counts boundaries
        breath = trace.breath + (trace.t > 0.5) if k == 0 else trace.breath
        assert len(runs) == np.unique(breath[bins == k]).size
        # The gap is the rest of one breath's gantry turn: from the bin's window in one breath to the next
        ends = np.array([trace.times_s[b - 1] for _, b in runs[:-1]])
        starts = np.array([trace.times_s[a] for a, _ in runs[1:]])
        gaps = cluster_gaps(runs, gantry)
        assert np.allclose(gaps, (starts - ends) / (trace.times_s[1] - trace.times_s[0]) * step)
        assert np.all(gaps > 0.5 * 4.0 * 360.0 / DURATION_S * 0.6)  # at least most of the shortest breath
        period = np.median(trace.periods_s) * 360.0 / DURATION_S
        assert 0.6 * period < np.median(gaps) < 1.1 * period
    assert np.all(covered == 1)  # every projection is in exactly one cluster of one bin


def test_quantised_states_stay_within_tolerance():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.0, 1.0, (300, 3))
    weights = np.array([[10.0, 1.0, 0.0], [0.0, 2.0, 20.0]])
    labels, representatives = quantise_instants(points, 1.5, weights)
    distance = (np.abs(points - points[representatives[labels]]) @ weights.T).max(axis=1)
    assert distance.max() <= 1.5 and np.array_equal(labels[representatives], np.arange(representatives.size))
    assert quantise_instants(np.zeros((5, 3)), 0.1)[1].size == 1


def test_presets_are_clinical_like():
    xvi, truebeam = scanner_preset("xvi"), scanner_preset("truebeam")
    slow = scanner_preset("truebeam-4min")
    assert set(PRESETS) == {"xvi", "truebeam", "truebeam-4min"}
    assert xvi.count == 1320 and not xvi.geometry().is_half_fan and xvi.geometry().arc_deg > 359
    assert truebeam.geometry().is_half_fan and 60 <= truebeam.count / 10 <= 130
    # the slower half fan: XVI-like's turn and projections, TrueBeam-like's fan and panel
    assert slow.count == xvi.count and slow.duration_s == xvi.duration_s and slow.geometry().is_half_fan
    assert (slow.panel_mm, slow.panel_offset_mm) == (truebeam.panel_mm, truebeam.panel_offset_mm)
    for preset in (xvi, truebeam, slow):
        assert 60.0 <= preset.duration_s <= 240.0 and preset.geometry().count == preset.count
    with pytest.raises(InputError):
        scanner_preset("cyberknife")


def test_scatter_and_noise():
    lines = np.tile(np.linspace(0.0, 5.0, 40, dtype=np.float32), (3, 30, 1))
    detector = Detector.centred((40, 30), (4.0, 4.0))
    assert add_scatter(lines, Physics.off(), detector) is lines
    assert add_noise(lines, Physics.off(), np.random.default_rng(0)) is lines
    scattered = add_scatter(lines, Physics(scatter_to_primary=0.5), detector)
    assert np.allclose(scattered[:, :, -1], 5.0 - np.log(1.5), atol=1e-4)  # behind the thickest part
    assert np.all(scattered <= lines + 1e-6) and np.all(scattered[:, :, 0] > -0.05)  # some reaches air
    noisy = add_noise(
        np.full((50, 40, 40), 2.0, np.float32), Physics(photons_per_pixel=1e4), np.random.default_rng(1)
    )
    assert abs(noisy.mean() - 2.0) < 0.01 and abs(noisy.var() - np.exp(2.0) / 1e4) < 0.1 * np.exp(2.0) / 1e4


# A small scanner for the phantom: 4 phases, 2 frames/s over one minute (120 projections, ~2 per cluster)
SMALL = ScannerPreset("small", 1000.0, 1536.0, (409.6, 409.6), 0.0, 360.0, 2.0, 60.0)


@pytest.fixture(scope="module")
def phantom():
    """The analytic chest phantom on a 48^3 grid of 4 mm voxels, with its masks and a breathing model."""
    pair = phantom_pair(shape=(48, 48, 48), spacing_mm=4.0)
    ct = pair.moving
    labels = sitk.GetArrayFromImage(pair.moving_labels)
    body = sitk.GetImageFromArray((sitk.GetArrayFromImage(ct) > -500).astype(np.uint8))
    lungs = sitk.GetImageFromArray(np.isin(labels, (1, 2, 3)).astype(np.uint8))
    for mask in (body, lungs):
        mask.CopyInformation(ct)
    motion = BreathingMotion(ct, body, lungs, MotionParams(si_amplitude_mm=(10.0, 10.0)), seed=0)
    return ct, sitk.GetArrayFromImage(body).astype(bool), motion


def _rms_in(image: sitk.Image, reference: sitk.Image, mask: np.ndarray) -> float:
    difference = sitk.GetArrayFromImage(image) - sitk.GetArrayFromImage(reference)
    return float(np.sqrt(np.mean(difference[mask] ** 2)))


def test_phases_end_to_end_on_the_phantom(phantom):
    ct, body, motion = phantom
    scans = simulate_phases(ct, motion, 4, [0, 2], SMALL, Physics(), seed=1)
    assert [s.index for s in scans] == [0, 2]
    bins = phase_bins(scans[0].trace.t, 4)
    for scan in scans:
        assert scan.cbct.GetSize() == ct.GetSize() and scan.cbct.GetPixelID() == sitk.sitkFloat32
        assert (
            np.allclose(scan.cbct.GetOrigin(), ct.GetOrigin()) and scan.cbct.GetSpacing() == ct.GetSpacing()
        )
        image = sitk.GetArrayFromImage(scan.cbct)
        assert np.all(np.isfinite(image))
        assert scan.geometry.count == scan.info["views"] == scan.projections.size
        assert np.all(bins[scan.projections] == scan.index) and scan.info["clusters"] >= 10
        assert scan.info["state_error_bound_mm"] <= 1.0 and max(map(abs, scan.info["t_from_centre"])) <= 0.125
        json.dumps([scan.info, scan.acquisition])  # case.json material
        assert _rms_in(scan.cbct, ct, body) < 300.0  # streaks, noise, scatter and motion, but the anatomy
    # End inhale moves the lungs' lower edge: the phases differ where the CT phases do
    assert scans[1].info["motion_states"] > 1 and scans[1].info["signal_range"][1] > 0.5
    assert _rms_in(scans[0].cbct, scans[1].cbct, body) > 20.0
    assert scans[0].acquisition["projections"] == SMALL.count


def test_acquisition_bins_every_projection_once_and_repeats_the_phases(phantom):
    """The whole scan, phase by phase (what a prior from all projections needs): each projection in one
    bin, and a phase made in the same order is the phase ``simulate_phases`` made, to the bit."""
    ct, _, motion = phantom
    scan = Acquisition(ct, ClinicalMotion(motion), 4, SMALL, Physics(), 1, Placement.default())
    picked = np.concatenate([scan.selected(k) for k in range(4)])
    assert np.array_equal(np.sort(picked), np.arange(SMALL.count))
    lines, info = scan.lines(2)
    assert lines.shape == (scan.selected(2).size, *scan.detector.shape) and info["motion_states"] >= 1
    given = simulate_phases(ct, motion, 4, [2], SMALL, Physics(), seed=1)[0].cbct
    again = scan.reconstruct(2, lines)
    assert np.array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(given))


def test_a_tv_preset_reconstructs_the_same_projections_closer_to_the_ct(phantom):
    """The preset's reconstruction applies to the phase's projections as they were taken: a TV phase
    is its FDK phase's acquisition (same geometry and views), nearer the motionless CT."""
    ct, body, motion = phantom
    fdk_scan, tv_scan = (
        simulate_phases(ct, motion, 4, [0], replace(SMALL, reconstruction=kind), Physics.off(), seed=1)[0]
        for kind in ("fdk", "tv")
    )
    assert tv_scan.acquisition["preset"]["reconstruction"] == "tv"
    assert np.array_equal(tv_scan.projections, fdk_scan.projections)
    assert _rms_in(tv_scan.cbct, ct, body) < 0.8 * _rms_in(fdk_scan.cbct, ct, body)


def test_clustered_views_leave_more_streaks_than_even_views(phantom):
    """Streaks: the difference from a reconstruction of 360 even views, of the same motionless CT."""
    ct, body, motion = phantom
    scan = simulate_phases(ct, motion, 4, [0], SMALL, Physics.off(), seed=1)[0]
    count = scan.geometry.count
    placement = Placement.default()
    volume = placement.to_rtk(hu_to_mu(ct))
    detector = Detector.covering(volume, scan.geometry, SMALL.panel_mm)

    def reconstruct(geometry: ProjectionGeometry) -> np.ndarray:
        mu = fdk(forward_project(volume, geometry, detector), geometry, detector, volume)
        return sitk.GetArrayFromImage(mu_to_hu(placement.from_rtk(mu, ct)))

    dense = reconstruct(ProjectionGeometry.circular(1000.0, 1536.0, np.arange(360.0)))
    even = reconstruct(ProjectionGeometry.circular(1000.0, 1536.0, np.arange(count) * 360.0 / count))
    streaks = {
        name: float(np.sqrt(np.mean((image - dense)[body] ** 2)))
        for name, image in (("clustered", reconstruct(scan.geometry)), ("even", even))
    }
    assert streaks["clustered"] > 1.3 * streaks["even"], streaks


def test_a_vendor_phase_is_air_outside_the_field_of_view(phantom):
    """``-vendor`` presets write a phase as a console does: air where not every view of the turn sees, FDK's
    own image (a dark, streaked guess there) everywhere else, unchanged."""
    ct, body, motion = phantom
    narrow = replace(SMALL, panel_mm=(260.0, 200.0))  # sees part of the 19 cm phantom
    cbct = simulate_phases(ct, motion, 4, [0], narrow, Physics.off(), seed=1)[0].cbct
    fov = scanned_field_of_view(ct, narrow)
    seen = sitk.GetArrayFromImage(fov).astype(bool)
    assert 0.2 < seen.mean() < 0.9
    given, cut = (sitk.GetArrayFromImage(image) for image in (cbct, air_outside(cbct, fov)))
    assert np.all(cut[~seen] == -1000.0) and np.array_equal(cut[seen], given[seen])
    assert np.mean(np.abs(given[~seen & body] + 1000.0)) > 50.0  # the body there was not air before
    assert SimulationParams.preset("truebeam-vendor").air_outside_field_of_view
    assert SimulationParams.preset("xvi-vendor").scanner == "xvi"
    with pytest.raises(InputError, match="needs a cone-beam preset"):
        SimulationParams(air_outside_field_of_view=True)


def test_a_vendor_case_is_written_cut_and_says_so(tmp_path):
    """``simulate_case`` with a ``-vendor`` preset end to end: a phantom wider than XVI-like's 27 cm circle
    and longer than the 27 cm its panel reaches along the axis. Its phases are air outside the field of view,
    every file of the case holds only the slices the panel reaches, as many cut at each end (the centre, the
    isocentre, stays), the lungs are scored only inside, and case.json says so."""
    ct = phantom_pair(shape=(72, 80, 80), spacing_mm=4.0).moving  # 32 cm across, 28.8 cm long
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    params = replace(SimulationParams.preset("xvi-vendor"), spacing_mm=None, crop_margin_mm=None)
    params = replace(params, masks=MaskParams(min_lung_fraction=0.01))  # the phantom's body is long
    case = simulate_case(tmp_path / "ct.nii.gz", tmp_path / "case", seed=1, params=params, only=[5])
    assert json.loads((case / "case.json").read_text())["air_outside_field_of_view"] is True
    names = ("fov_mask", "lung_mask", "cbct_phase5", "ct_phase5", "truth_0_5", "labels_phase5")
    images = {name: sitk.ReadImage(str(case / f"{name}.nii.gz")) for name in names}
    sizes = {image.GetSize() for image in images.values()}
    assert len(sizes) == 1 and next(iter(sizes))[2] < 72, sizes

    def centre(image: sitk.Image) -> np.ndarray:
        return np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))

    assert np.allclose(centre(images["cbct_phase5"]), centre(ct))
    seen, lungs, phase = (sitk.GetArrayFromImage(images[name]) for name in names[:3])
    seen = seen.astype(bool)
    assert seen[0].any() and seen[-1].any()  # the panel reaches the first and last slices written
    assert 0.2 < seen.mean() < 0.99 and np.all(phase[~seen] == -1000) and not np.any(lungs[~seen])


def test_bad_input_is_one_line(phantom):
    ct, _, motion = phantom
    with pytest.raises(InputError, match="phases"):
        simulate_phases(ct, motion, 4, [4], SMALL)
    other = sitk.Image([10, 10, 10], sitk.sitkFloat32)
    with pytest.raises(InputError, match="grid"):
        simulate_phases(other, motion, 4, [0], SMALL)
