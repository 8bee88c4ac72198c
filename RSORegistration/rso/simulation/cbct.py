"""CBCT-like images by phase-binned sparse-view projection and reconstruction.

A 4D CBCT scan is one gantry arc; each projection is sorted into the breathing phase it was
taken in, so each phase is reconstructed from only its own sparse, interleaved subset of angles
(phase k of N gets every N-th projection, starting at projection k). The undersampling gives each
phase its own streak pattern, as in the paper's phase-resolved CBCT.

What is approximated: projections are parallel-beam and slice by slice (scikit-image's radon and
filtered back-projection), not a cone or fan beam, so there are no cone-beam artefacts. The arc's
views are spread over 180 degrees of parallel directions, which keeps the number of distinct view
directions per phase (see `parallel_directions`). Noise is Poisson noise on the transmitted photon
counts of every ray (`photons_per_mm2`). Scatter, beam hardening, truncation, detector lag and
motion within a phase bin are not modelled. The reconstruction runs on the CT phase's own grid
(the simulator's working grid, 2.5 mm by default, about 128 pixels across), which keeps a
10-phase case to about half a minute on 2 cores; at that size 40 views per phase under-sample
about as much as clinical 4D CBCT (60-130 views per phase) does at 512 pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter1d

from rso.core.projection.geometry import ProjectionGeometry
from rso.core.projection.parallel import attenuation_to_hu, fbp_slices, hu_to_attenuation

log = logging.getLogger(__name__)

PARALLEL_SID_MM = 1000.0  # RTK needs a source distance even for a parallel beam; it changes nothing there


@dataclass(frozen=True)
class CBCTParams:
    projections: int = 400  # over the whole arc; 40 per phase of 10 (see docs/simulator.md for the choice)
    arc_degrees: float = 360.0
    # Unattenuated photons per mm^2 of detector per projection; a ray's count scales with its bin
    # (pixel x slice), so coarser grids are less noisy, as in a real scan. 18000 gives about 25 HU
    # of noise at 2.5 mm; 0 turns noise off.
    photons_per_mm2: float = 18000.0
    filter_name: str = "shepp-logan"  # FBP ramp filter window (scikit-image's names)
    # Scatter: a smooth background added to the primary beam (0: none). The ratio is the scatter-to-
    # primary ratio behind the thickest part of each slice; sigma is the width of the scatter kernel.
    scatter_to_primary: float = 0.0
    scatter_sigma_mm: float = 30.0

    @classmethod
    def clinical(cls) -> CBCTParams:
        """Closer to a clinical 4D CBCT (docs/simulator.md gives the sources): 25 views per phase bin of
        10, twice the noise variance, and scatter at a ratio of 0.3."""
        return cls(projections=250, photons_per_mm2=9000.0, scatter_to_primary=0.3)


def phase_angles(phase: int, phases: int, params: CBCTParams = CBCTParams()) -> np.ndarray:
    """Gantry angles (degrees) of the projections binned to `phase`: every phases-th, offset by phase."""
    arc = np.arange(params.projections) * params.arc_degrees / params.projections
    return arc[phase::phases]


def simulate_cbct(
    ct: sitk.Image,
    phase: int,
    phases: int,
    params: CBCTParams = CBCTParams(),
    rng: np.random.Generator | None = None,
) -> sitk.Image:
    """A CBCT-like image (float32 HU, on the CT's grid) of one phase, from that phase's angle subset."""
    rng = np.random.default_rng() if rng is None else rng
    pixel_mm = ct.GetSpacing()[0]
    if abs(ct.GetSpacing()[1] - pixel_mm) > 1e-3 * pixel_mm:
        log.warning(
            "in-plane spacing %s is anisotropic; projecting as if square pixels of %.3g mm",
            ct.GetSpacing()[:2],
            pixel_mm,
        )
    photons_per_ray = params.photons_per_mm2 * pixel_mm * ct.GetSpacing()[2]

    def scatter_and_noise(sinogram: np.ndarray) -> np.ndarray:
        return _add_noise(_add_scatter(sinogram, params, pixel_mm), photons_per_ray, rng)

    hu = sitk.GetArrayFromImage(ct).astype(np.float32)  # (z, y, x): axial slices
    reconstructed = fbp_slices(
        hu_to_attenuation(hu, pixel_mm),
        parallel_directions(phase_angles(phase, phases, params), params),
        scatter_and_noise,
        params.filter_name,
    )
    image = sitk.GetImageFromArray(attenuation_to_hu(reconstructed, pixel_mm).astype(np.float32))
    image.CopyInformation(ct)
    return image


def phase_geometry(phase: int, phases: int, params: CBCTParams = CBCTParams()) -> ProjectionGeometry:
    """The parallel-beam geometry phase ``phase`` is reconstructed from, as RTK writes one (source-detector
    distance 0; the gantry angles are the parallel directions): what artefact matching needs."""
    directions = parallel_directions(phase_angles(phase, phases, params), params)
    return ProjectionGeometry.circular(PARALLEL_SID_MM, 0.0, directions)


def parallel_directions(gantry_degrees: np.ndarray, params: CBCTParams = CBCTParams()) -> np.ndarray:
    """Spread the arc's views over 180 degrees of parallel-beam directions.

    Through any one point, a fan beam's views over a full 360 degree arc pass along as many
    distinct directions as there are views (opposite views interleave), whereas opposite parallel
    views coincide. Scaling the arc onto 180 degrees keeps that count, and so the streak density.
    """
    return np.asarray(gantry_degrees) * (180.0 / params.arc_degrees)


def _add_scatter(sinogram: np.ndarray, params: CBCTParams, pixel_mm: float) -> np.ndarray:
    """Line integrals seen through scatter: -log(primary + scatter), per view (columns).

    Scattered photons come from the attenuated ones, so the scatter source along the detector is
    primary x line integral, spread by a Gaussian kernel (the kernel idea of Ohnesorge et al.,
    Eur Radiol 9:563, 1999). It is scaled so that behind the thickest part of the slice it is
    ``scatter_to_primary`` times the primary. Scatter lowers the apparent attenuation most where
    the primary is weak: cupping and shading, as in real CBCT.
    """
    if params.scatter_to_primary <= 0:
        return sinogram
    primary = np.exp(-sinogram)
    spread = gaussian_filter1d(
        primary * sinogram, params.scatter_sigma_mm / pixel_mm, axis=0, mode="constant"
    )
    views = np.arange(sinogram.shape[1])
    thickest = np.argmin(primary, axis=0)
    scale = params.scatter_to_primary * primary[thickest, views] / np.maximum(spread[thickest, views], 1e-12)
    return -np.log(primary + spread * scale[None, :])


def _add_noise(sinogram: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise on the transmitted photon counts of every ray."""
    if photons <= 0:
        return sinogram
    expected = photons * np.exp(-sinogram)
    counts = np.maximum(rng.poisson(expected), 1)  # a ray with no photon would give an infinite line integral
    return -np.log(counts / photons)
