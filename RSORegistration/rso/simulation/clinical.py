"""Clinical phase-binned 4D CBCT: a cone-beam acquisition of a breathing patient, binned and reconstructed.

The scanner turns at a steady speed and takes projections at a steady frame rate while the patient
breathes an irregular trace (rso.simulation.breathing). Each projection is a cone-beam projection
(RTK's Joseph projector) of the CT at that instant: the end-exhale CT pulled through the inverse of
a * u(t), u the case's motion (rso.simulation.motion) at the instant's cycle fraction t and a that
breath's amplitude. So a phase's projections come in clusters, one per breath, with the gantry's turn
over the rest of the breath between them, and the motion inside a phase bin is in the projections.
Scatter (a smooth detector-plane term) and Poisson noise are added to each projection, and each phase
is reconstructed by FDK (rso.core.projection.conebeam) from the projections binned to it.

Approximations:
* Instants are grouped into motion states (breathing.quantise_instants): a projection is made from
  its state's CT, whose displacement differs from the instant's by at most ``tolerance_mm`` anywhere
  (each phase's summary gives the bound reached, ``state_error_bound_mm``).
* Each state's inverse field is found on a grid ``coarse_factor`` times coarser than the CT's (by the
  fixed-point iteration v = -w(x + v) that ITK's inverter uses, per voxel) and interpolated linearly:
  0.2-0.6 mm off ITK's inverse on the full grid at 23 mm SI motion (99th percentile in the body 0.2-0.3
  mm). States are warped with linear interpolation.
* The detector is the preset's panel binned to pixels of the CT's voxel spacing times the
  magnification; no beam hardening, detector lag or blur, no truncation correction in FDK (a full-fan
  panel narrower than the body leaves a bright rim); scatter and noise as in ``Physics``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter, map_coordinates

from rso.core.projection import (
    Detector,
    Placement,
    ProjectionGeometry,
    forward_project,
    hu_to_mu,
    mu_to_hu,
    reconstruct,
)
from rso.errors import InputError
from rso.simulation.breathing import (
    BreathingParams,
    BreathingTrace,
    cluster_summary,
    phase_bins,
    quantise_instants,
)
from rso.simulation.motion import BreathingMotion

log = logging.getLogger(__name__)

AIR_HU = -1000.0
_WARM_STARTS = 6  # inverse fields kept (6.5 MB each at the 2.5 mm working grid)


@dataclass(frozen=True)
class ScannerPreset:
    """A cone-beam scanner and its 4D protocol: distances and panel in mm at the detector, arc in degrees,
    and how each phase is reconstructed (rso.core.projection.RECONSTRUCTIONS; FDK as the vendors do)."""

    name: str
    source_to_isocenter_mm: float
    source_to_detector_mm: float
    panel_mm: tuple[float, float]  # (u, v): u across the rotation axis, v along it
    panel_offset_mm: float  # the panel's u shift at the detector (half fan); 0 for a full fan
    arc_deg: float
    frame_rate_hz: float
    duration_s: float
    start_deg: float = 0.0
    reconstruction: str = "fdk"

    @property
    def count(self) -> int:
        return int(round(self.frame_rate_hz * self.duration_s))

    def times_s(self) -> np.ndarray:
        """(P,) the time of each projection (s)."""
        return np.arange(self.count) / self.frame_rate_hz

    def gantry_deg(self) -> np.ndarray:
        """(P,) the gantry angle of each projection (degrees): a steady turn over the arc."""
        return self.start_deg + self.arc_deg * np.arange(self.count) / self.count

    def geometry(self) -> ProjectionGeometry:
        """The whole acquisition's geometry (every projection, in time order)."""
        return ProjectionGeometry.circular(
            self.source_to_isocenter_mm,
            self.source_to_detector_mm,
            self.gantry_deg(),
            offset_x=self.panel_offset_mm,
        )


# Elekta XVI-like (Symmetry-style 4D): full fan, 40.96 cm panel (27 cm across at the isocentre: a thorax is
# truncated, as with XVI's small field of view), one 360 degree turn in 4 min at 5.5 frames/s: 1320
# projections, ~130 per phase of 10, a cluster every ~6 degrees. 360 rather than a 200 degree short scan:
# 4D protocols turn slowly over the full circle to gather breaths, a short scan would leave ~70 views per
# phase, and Parker weighting would weigh a phase's clusters near the arc's ends down to nothing.
XVI = ScannerPreset("xvi", 1000.0, 1536.0, (409.6, 409.6), 0.0, 360.0, 5.5, 240.0)
# Varian TrueBeam-like: half fan (40 x 30 cm panel shifted 16 cm: ~48 cm across, ~20 cm along the axis at
# the isocentre), one turn in 2 min at 7 frames/s: 840 projections, ~84 per phase of 10, 12 degrees of turn
# per 4 s breath, so gaps of 10 degrees or more between a phase's clusters.
TRUEBEAM = ScannerPreset("truebeam", 1000.0, 1500.0, (397.0, 298.0), 160.0, 360.0, 7.0, 120.0)
# The same half fan turning at 1.5 degrees/s (4D CBCT on Varian's On-Board Imager is used at 1-6 degrees/s:
# Santoso et al., Radiat Oncol 2016): 4 min at 5.5 frames/s, XVI-like's 1320 projections, so that the two
# differ only in fan and panel (bench/sweep/half-fan-4min/rule.md).
TRUEBEAM_4MIN = replace(TRUEBEAM, name="truebeam-4min", frame_rate_hz=5.5, duration_s=240.0)
PRESETS = {preset.name: preset for preset in (XVI, TRUEBEAM, TRUEBEAM_4MIN)}


def scanner_preset(name: str) -> ScannerPreset:
    if name not in PRESETS:
        raise InputError(f"scanner preset must be one of {sorted(PRESETS)}, not {name!r}")
    return PRESETS[name]


@dataclass(frozen=True)
class Physics:
    """Noise and scatter of every projection; ``Physics.off()`` turns both off."""

    # Unattenuated photons per pixel of the simulated detector (the CT's voxel spacing x magnification,
    # ~3.8 mm at the 2.5 mm grid) per projection; 0: no noise. On the chest CT at 2.5 mm, 1e5 adds ~35 HU
    # RMS in soft tissue (XVI preset; ~65 HU on TrueBeam's half fan) to the ~35 HU (~95 HU) that the
    # views' sparsity leaves: about the noise of cbct.CBCTParams.clinical.
    photons_per_pixel: float = 1.0e5
    # Scatter-to-primary ratio behind the thickest part of each projection (0: none), and the width
    # (Gaussian sigma, mm at the detector) of the scatter kernel. 0.3 shades soft tissue by ~25 HU (XVI)
    # to ~50 HU (TrueBeam) on that CT: residual scatter after a clinical correction.
    scatter_to_primary: float = 0.3
    scatter_sigma_mm: float = 45.0

    @classmethod
    def off(cls) -> Physics:
        return cls(photons_per_pixel=0.0, scatter_to_primary=0.0)


@dataclass(frozen=True)
class MotionSampling:
    tolerance_mm: float = 1.0  # bound on the displacement difference between an instant and its state
    coarse_factor: int = 2  # the inverse fields' grid is this many times coarser than the CT's
    inverse_iterations: int = 50  # at most, per state (warm-started from a state solved before)
    inverse_tolerance_mm: float = 0.01  # a voxel stops when an iteration changes its inverse by less


@dataclass(frozen=True)
class ClinicalMotion:
    """The case's motion model with the patient's breathing irregularity and how finely it is sampled."""

    model: BreathingMotion
    breathing: BreathingParams = field(default_factory=BreathingParams)
    sampling: MotionSampling = field(default_factory=MotionSampling)


@dataclass
class PhaseScan:
    """One phase's CBCT (float32 HU on ct0's grid), its geometry and where its projections came from."""

    index: int
    cbct: sitk.Image
    geometry: ProjectionGeometry  # the projections binned to this phase, in time order
    projections: np.ndarray  # (P_k,) their indices in the acquisition
    info: dict  # views, clusters, gaps, motion states (for case.json)
    acquisition: dict  # preset, physics, trace and detector: the same for every phase
    trace: BreathingTrace


class Acquisition:
    """One whole 4D scan as the scanner takes it: the trace, the phase bins, and each bin's projections.

    Only the projections asked for are made (``lines``): a benchmark needs two phases of ten.
    """

    def __init__(
        self,
        ct0: sitk.Image,
        motion: ClinicalMotion,
        phases: int,
        preset: ScannerPreset,
        physics: Physics,
        seed: int,
        placement: Placement,
    ):
        self.ct0 = sitk.Cast(ct0, sitk.sitkFloat32)
        self.phases, self.physics, self.seed, self.placement = phases, physics, seed, placement
        self.trace = BreathingTrace.draw(preset.times_s(), seed, motion.breathing)
        self.bins = phase_bins(self.trace.t, phases)  # (P,) each projection's phase bin
        self.geometry, self.reconstruction = preset.geometry(), preset.reconstruction
        self.grid = placement.rtk_grid(self.ct0)
        self.detector = Detector.covering(self.grid, self.geometry, preset.panel_mm)
        self.states = _States(self.ct0, motion.model, motion.sampling)
        self.summary = {
            "preset": asdict(preset),
            "projections": preset.count,
            "phases": phases,
            "physics": asdict(physics),
            "sampling": asdict(motion.sampling),
            "trace": self.trace.summary(),
            "geometry": self.geometry.summary(),
            "detector": asdict(self.detector),
            "placement": "default" if placement.is_default else asdict(placement),
        }

    def selected(self, k: int) -> np.ndarray:
        """(P_k,) the indices of the projections binned to phase k, in time order."""
        selected = np.flatnonzero(self.bins == k)
        if selected.size < 2:
            raise InputError(f"phase {k} of {self.phases} gets {selected.size} projections; use fewer phases")
        return selected

    def lines(self, k: int) -> tuple[np.ndarray, dict]:
        """Phase k's line integrals (P_k, V, U), each through its instant's CT, with scatter and noise;
        and how the motion was sampled for them."""
        selected = self.selected(k)
        lines, info = _project(
            self.states, self.trace, selected, k / self.phases, self.geometry, self.detector, self.placement
        )
        rng = np.random.default_rng([self.seed, 3, k])
        return add_noise(add_scatter(lines, self.physics, self.detector), self.physics, rng), info

    def reconstruct(self, k: int, lines: np.ndarray) -> sitk.Image:
        """Phase k's line integrals reconstructed onto ct0's grid as the preset says, float32 HU."""
        mu = reconstruct(
            self.reconstruction, lines, self.geometry.subset(self.selected(k)), self.detector, self.grid
        )
        return mu_to_hu(self.placement.from_rtk(mu, self.ct0))


def simulate_phases(
    ct0: sitk.Image,
    motion: BreathingMotion | ClinicalMotion,
    phases: int,
    indices: list[int],
    preset: ScannerPreset = XVI,
    physics: Physics = Physics(),
    seed: int = 0,
    placement: Placement | None = None,
) -> list[PhaseScan]:
    """Clinical phase-binned CBCTs of ``ct0`` (end exhale, HU) breathing by ``motion``, phases ``indices``.

    The acquisition is the preset's whole scan, binned into ``phases`` bins (bin k centred on cycle
    fraction k / phases); only the projections binned to ``indices`` are projected. A BreathingMotion
    is taken with the default breathing irregularity and sampling (ClinicalMotion). ``placement``: where
    ct0 sits in RTK's frame (default: its centre at the isocentre, superior along the rotation axis).
    """
    motion = motion if isinstance(motion, ClinicalMotion) else ClinicalMotion(motion)
    placement = Placement.default() if placement is None else placement
    _check_input(ct0, motion.model, phases, indices)
    scan = Acquisition(ct0, motion, phases, preset, physics, seed, placement)
    scans = []
    for k in indices:
        started = time.perf_counter()
        lines, motion_info = scan.lines(k)
        cbct = scan.reconstruct(k, lines)
        subset = scan.geometry.subset(scan.selected(k))
        info = {"phase": k, **cluster_summary(scan.bins, k, preset.gantry_deg()), **motion_info}
        info |= {"geometry": subset.summary(), "seconds": round(time.perf_counter() - started, 1)}
        log.info("CBCT phase %d: %s", k, info)
        scans.append(PhaseScan(k, cbct, subset, scan.selected(k), info, scan.summary, scan.trace))
    return scans


def _check_input(ct0: sitk.Image, model: BreathingMotion, phases: int, indices: list[int]) -> None:
    reference = model.reference
    same = ct0.GetSize() == reference.GetSize() and np.allclose(ct0.GetSpacing(), reference.GetSpacing())
    if not (same and np.allclose(ct0.GetOrigin(), reference.GetOrigin(), atol=1e-3)):
        raise InputError("the CT and the motion model must share one grid (make the model from this CT)")
    if phases < 2 or not indices or not all(0 <= k < phases for k in indices):
        raise InputError(f"phases {list(indices)} must be in 0..{phases - 1}, with at least 2 phases")


def _project(
    states: _States,
    trace: BreathingTrace,
    selected: np.ndarray,
    centre: float,
    geometry: ProjectionGeometry,
    detector: Detector,
    placement: Placement,
) -> tuple[np.ndarray, dict]:
    """Line integrals (P_k, V, U) of the selected projections, each through its motion state's CT.

    ``centre``: the bin's cycle fraction, for the summary of how far the instants lie from it.
    """
    z = states.coefficients(trace.a[selected], trace.t[selected])
    labels, representatives = quantise_instants(z, states.sampling.tolerance_mm, states.weights)
    lines = np.empty((selected.size, *detector.shape), np.float32)
    iterations = states.iterations
    for s in np.argsort(z[representatives, 0], kind="stable"):  # small to large: each warm-starts the next
        members = np.flatnonzero(labels == s)
        image = states.image_at(z[representatives[s]])
        picked = selected[members] if members.size > 1 else np.repeat(selected[members], 2)
        projected = forward_project(placement.to_rtk(hu_to_mu(image)), geometry.subset(picked), detector)
        lines[members] = projected[: members.size]
    signal = trace.signal()[selected]
    offset = (trace.t[selected] - centre + 0.5) % 1.0 - 0.5
    return lines, {
        "motion_states": int(representatives.size),
        "inverse_sweeps": round(states.iterations - iterations, 1),
        "state_error_bound_mm": round(states.bound(z, z[representatives[labels]]), 3),
        "t_from_centre": [round(float(v), 4) for v in (offset.min(), offset.max())],  # cycle fractions
        "signal_range": [round(float(signal.min()), 4), round(float(signal.max()), 4)],
    }


class _States:
    """The motion's terms on a coarse grid, and the CT at any instant (a * c_i(t) for every term i)."""

    def __init__(self, ct0: sitk.Image, model: BreathingMotion, sampling: MotionSampling):
        self.ct0, self.sampling = ct0, sampling
        self.curves = [curve for _, _, curve in model.terms]
        factor = int(sampling.coarse_factor)
        size = [int(np.ceil((n - 1) / factor)) + 1 for n in ct0.GetSize()]
        # Coarse node i sits on fine voxel factor * i; nodes past the grid's edge repeat the edge voxel
        picks = [np.minimum(np.arange(n) * factor, m - 1) for n, m in zip(size[::-1], ct0.GetSize()[::-1])]
        self.patterns = np.stack(
            [pattern[np.ix_(*picks)] for _, pattern, _ in model.terms]
        )  # (n, z, y, x, 3)
        self.coarse = sitk.Image(size, sitk.sitkVectorFloat64, 3)
        self.coarse.SetOrigin(ct0.GetOrigin())
        self.coarse.SetSpacing([s * factor for s in ct0.GetSpacing()])
        self.spacing = np.asarray(self.coarse.GetSpacing())[::-1]  # (z, y, x) mm
        magnitudes = np.sqrt((self.patterns**2).sum(axis=-1)).reshape(len(self.curves), -1).T  # (N, n)
        self.magnitudes = magnitudes
        # The quantiser's distance needs only the voxels on the upper hull of the magnitudes
        directions = np.abs(np.random.default_rng(0).normal(size=(256, magnitudes.shape[1])))
        hull = np.argmax(magnitudes @ np.vstack([np.eye(magnitudes.shape[1]), directions]).T, axis=0)
        self.weights = magnitudes[np.unique(hull)]  # (J, n) mm
        self.solved: list[tuple[np.ndarray, np.ndarray]] = []  # recent (z, inverse): warm starts
        self.iterations = 0

    def coefficients(self, a: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(P, n): every term's weight a * c_i(t) at each instant."""
        return np.array([[ai * curve(ti) for curve in self.curves] for ai, ti in zip(a, t)])

    def bound(self, z: np.ndarray, represented: np.ndarray) -> float:
        """Largest displacement difference (mm) any coarse node sees between instants and their states."""
        delta = np.abs(z - represented)
        return float(max((delta[i : i + 16] @ self.magnitudes.T).max() for i in range(0, len(delta), 16)))

    def image_at(self, z: np.ndarray) -> sitk.Image:
        """The CT (float32 HU) at coefficients z (n,): ct0 pulled through the inverse of sum z_i u_i."""
        forward = np.tensordot(z, self.patterns, axes=1)  # (z, y, x, 3) LPS mm, phase 0 -> the instant
        if np.abs(forward).max() < 1e-3:
            return self.ct0
        start = -forward
        if self.solved:  # the nearest state solved lately, moved by the first-order change of the field
            near_z, near_inverse = min(
                self.solved, key=lambda item: (np.abs(item[0] - z) @ self.weights.T).max()
            )
            start = near_inverse - np.tensordot(z - near_z, self.patterns, axes=1)
        inverse, iterations = _invert(forward, self.spacing, start, self.sampling)
        self.iterations += iterations
        self.solved = [*self.solved[-(_WARM_STARTS - 1) :], (z, inverse)]
        transform = sitk.DisplacementFieldTransform(self._vector(inverse))
        return sitk.Resample(self.ct0, self.ct0, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)

    def _vector(self, array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(np.asarray(array, np.float64), isVector=True)
        image.CopyInformation(self.coarse)
        return image


def _invert(forward: np.ndarray, spacing: np.ndarray, start: np.ndarray, sampling: MotionSampling):
    """The inverse v of a displacement field w: the fixed-point iteration v(x) = -w(x + v(x)) from ``start``.

    forward: w, shape (z, y, x, 3) LPS mm on an axis-aligned grid of ``spacing`` (z, y, x) mm. Each voxel's
    iteration involves only that voxel, so only those not yet converged are iterated on. Beyond the grid
    w is taken from the nearest edge voxel (the abdomen keeps moving there). Returns (v, shape (z, y, x, 3)
    LPS mm; the work in sweeps of the whole grid).
    """
    shape = forward.shape[:3]
    inverse = np.array(start, np.float64).reshape(-1, 3)
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    components = [forward[..., c] for c in range(3)]
    active, work = np.arange(inverse.shape[0]), 0.0
    for _ in range(sampling.inverse_iterations):
        at = (
            index[:, active] + (inverse[active][:, ::-1] / spacing).T
        )  # array axes (z, y, x) vs LPS (x, y, z)
        updated = -np.stack([map_coordinates(c, at, order=1, mode="nearest") for c in components], axis=1)
        change = np.abs(updated - inverse[active]).max(axis=1)
        inverse[active] = updated
        work += active.size / inverse.shape[0]
        active = active[change >= sampling.inverse_tolerance_mm]
        if active.size == 0:
            break
    return inverse.reshape(*shape, 3), round(work, 2)


def add_scatter(lines: np.ndarray, physics: Physics, detector: Detector) -> np.ndarray:
    """Line integrals seen through scatter, -log(primary + scatter), each projection on its own.

    (P, V, U) in and out. As rso.simulation.cbct's 1-D version, now over the detector plane: the scatter
    source is primary x line integral, spread by a Gaussian of ``scatter_sigma_mm`` (Ohnesorge et al.,
    Eur Radiol 9:563, 1999) and scaled to ``scatter_to_primary`` times the primary behind the thickest
    part of the projection. Edge pixels continue past a truncated panel.
    """
    if physics.scatter_to_primary <= 0:
        return lines
    sigma = [
        0.0,
        physics.scatter_sigma_mm / detector.spacing_mm[1],
        physics.scatter_sigma_mm / detector.spacing_mm[0],
    ]
    lines64 = lines.astype(np.float64)
    primary = np.exp(-lines64)
    spread = gaussian_filter(primary * lines64, sigma, mode="nearest")
    flat = lines64.reshape(len(lines), -1)
    thickest = np.argmax(flat, axis=1)
    rows = np.arange(len(lines))
    at_thickest = np.exp(-flat[rows, thickest]) / np.maximum(
        spread.reshape(len(lines), -1)[rows, thickest], 1e-12
    )
    scale = physics.scatter_to_primary * at_thickest
    return (-np.log(primary + spread * scale[:, None, None])).astype(np.float32)


def add_noise(lines: np.ndarray, physics: Physics, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise on each pixel's photon count, (P, V, U) line integrals in and out."""
    if physics.photons_per_pixel <= 0:
        return lines
    expected = physics.photons_per_pixel * np.exp(-lines.astype(np.float64))
    counts = np.maximum(rng.poisson(expected), 1)  # no photon would give an infinite line integral
    return (-np.log(counts / physics.photons_per_pixel)).astype(np.float32)
