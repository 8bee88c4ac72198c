"""The simulator's presets with local errors: an inserted lesion with its own motion, lagging lower
lobes, and the clinical CBCT (fewer views, more noise, scatter), on real CT anatomy at 6 mm."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from rso.errors import InputError
from rso.simulation.anatomy import body_mask, lung_mask
from rso.simulation.cbct import CBCTParams, simulate_cbct
from rso.simulation.fetch import fetch_data
from rso.simulation.lesion import LesionParams
from rso.simulation.motion import BreathingMotion, MotionParams
from rso.simulation.simulate import SimulationParams, make_phases, working_ct

LESION = 4  # rso.simulation.case_labels.LABELS


@pytest.fixture(scope="module")
def ct() -> sitk.Image:
    return working_ct(sitk.ReadImage(str(fetch_data()["lung1"]), sitk.sitkFloat32), spacing_mm=6.0)


def test_the_demo_scans_with_cone_beam_presets_of_the_simulator():
    from rso.options import DEMO_SCANNERS
    from rso.simulation.simulate import SIMULATION_PRESETS

    assert set(DEMO_SCANNERS) <= set(SIMULATION_PRESETS)
    assert all(SimulationParams.preset(name).scanner is not None for name in DEMO_SCANNERS)


def test_presets_name_their_motion_and_cbct():
    standard, local, clinical = (SimulationParams.preset(name) for name in ("standard", "local", "clinical"))
    assert standard.motion.lesion is None and standard.motion.lower_lobe_lag == 0
    assert local.motion.lesion is not None and local.motion.lower_lobe_lag > 0
    assert local.motion.si_amplitude_mm == (20.0, 25.0) and clinical.motion == local.motion
    assert clinical.cbct.projections < CBCTParams().projections and clinical.cbct.scatter_to_primary > 0


def test_a_reconstruction_other_than_fdk_needs_a_cone_beam_preset():
    assert SimulationParams.preset("truebeam").reconstruction == "fdk"  # as the vendors reconstruct
    for scanner in ("xvi", "truebeam"):
        tv, fdk = SimulationParams.preset(f"{scanner}-tv"), SimulationParams.preset(scanner)
        assert tv.reconstruction == "tv" and replace(tv, reconstruction="fdk") == fdk
    with pytest.raises(InputError, match="needs a cone-beam preset"):
        replace(SimulationParams.preset("clinical"), reconstruction="tv")
    with pytest.raises(InputError, match="one of fdk, tv"):
        replace(SimulationParams.preset("truebeam"), reconstruction="sart")


def test_the_lesion_is_painted_in_and_moves_on_its_own(ct):
    with_lesion = MotionParams(si_amplitude_mm=(20.0, 20.0), lesion=LesionParams())
    phases, model, _, _ = make_phases(ct, [0.0, 0.4], seed=3, motion=with_lesion)
    labels = sitk.GetArrayViewFromImage(phases[0].labels)
    lesion = labels == LESION
    assert lesion.sum() > 5
    hu, before = sitk.GetArrayViewFromImage(phases[0].ct), sitk.GetArrayViewFromImage(ct)
    assert (
        np.mean(hu[lesion]) > np.mean(before[lesion]) + 200
    )  # soft tissue where lung was (soft edge at 6 mm)
    assert abs(hu[lesion].max() - LesionParams().hu) < 60
    assert (
        sitk.GetArrayViewFromImage(phases[1].labels) == LESION
    ).sum() > 0.5 * lesion.sum()  # carried along
    # The same breathing without the lesion's own motion: the two fields differ at the lesion, and far
    # from it not.
    plain, _, _, _ = make_phases(ct, [0.0, 0.4], seed=3, motion=MotionParams(si_amplitude_mm=(20.0, 20.0)))
    difference = np.linalg.norm(
        sitk.GetArrayViewFromImage(phases[1].truth) - sitk.GetArrayViewFromImage(plain[1].truth), axis=-1
    )
    own = abs(model.lesion.own_si_mm)
    assert np.median(difference[lesion]) > 0.3 * own
    assert np.percentile(difference, 10) < 0.05  # the bump fades: most of the body moves as before


def test_the_lower_lobes_lag_the_upper_lungs(ct):
    body = body_mask(ct)
    lungs = lung_mask(ct, body)
    params = MotionParams(si_amplitude_mm=(20.0, 20.0), perturbation_mm=0.0, hysteresis_mm=0.0)
    lagging = BreathingMotion(
        ct, body, lungs, MotionParams(**{**params.__dict__, "lower_lobe_lag": 0.1}), seed=1
    )
    together = BreathingMotion(ct, body, lungs, params, seed=1)
    si = lambda motion, t: sitk.GetArrayFromImage(motion.field(t))[..., 2]  # noqa: E731
    lung = sitk.GetArrayViewFromImage(lungs).astype(bool)
    rows = np.nonzero(lung.any(axis=(1, 2)))[0]
    low, high = lung.copy(), lung.copy()
    low[rows[len(rows) // 5] :] = False  # the lowest fifth of the lungs (array z grows superiorly)
    high[: rows[-len(rows) // 3]] = False  # the upper third
    ratio_low = np.abs(si(lagging, 0.3)[low]).mean() / np.abs(si(together, 0.3)[low]).mean()
    ratio_high = np.abs(si(lagging, 0.3)[high]).mean() / np.abs(si(together, 0.3)[high]).mean()
    assert ratio_low < 0.8 and ratio_high == pytest.approx(1.0, abs=0.02)
    assert np.abs(si(lagging, 0.0)).max() == 0.0  # still the identity at end exhale


def test_the_clinical_cbct_is_noisier_and_shows_scatter_cupping(ct):
    slab = ct[:, :, ct.GetSize()[2] // 2 - 2 : ct.GetSize()[2] // 2 + 2]
    body = sitk.GetArrayViewFromImage(body_mask(slab)).astype(bool)
    standard = sitk.GetArrayFromImage(simulate_cbct(slab, 0, 10, CBCTParams(), np.random.default_rng(0)))
    clinical = sitk.GetArrayFromImage(
        simulate_cbct(slab, 0, 10, CBCTParams.clinical(), np.random.default_rng(0))
    )
    truth = sitk.GetArrayViewFromImage(slab)
    error = lambda image: np.sqrt(np.mean((image - truth)[body] ** 2))  # noqa: E731
    assert error(clinical) > 1.2 * error(standard)
    assert (
        np.mean((clinical - standard)[body]) < -20
    )  # scatter lowers the apparent attenuation inside the body
