"""Artefact matching: two phase images, each seen again through the other phase's projection geometry.

Each phase of a 4D CBCT is reconstructed from its own subset of projections (clusters of views, one
per breath), so each carries its own undersampling streaks; two phases' streaks differ, and inside a
box of lung a rotated streak looks like motion of several millimetres (bench/README.md, "Streaks that
look like motion"). Projecting the fixed image again through the moving image's geometry and the
moving image through the fixed image's, and reconstructing each with the same FDK recipe, gives both
the streaks of both geometries: a similarity then compares anatomy again. This is the idea of a
patient-specific artefact model (Brehm et al., "Artifact-resistant motion estimation with a
patient-specific artifact model for motion-compensated cone-beam CT", Med Phys 40:101913, 2013),
made symmetric so that it needs no streak-free prior image.

Geometry decides the projector: a cone beam goes through RTK (Joseph forward projection, then FDK
with the weighting the geometry needs, ``rso.core.projection.conebeam``) in the scanner's frame
(``Placement``); a parallel beam (source-detector distance 0) through the slice-by-slice
scikit-image projector (``rso.core.projection.parallel``).
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import AIR_HU
from rso.core.projection.conebeam import FDK_HANN_CUT, Detector, fdk, forward_project
from rso.core.projection.geometry import Placement, ProjectionGeometry
from rso.core.projection.parallel import reproject_parallel
from rso.core.projection.scan import ScanPair
from rso.core.projection.units import hu_to_mu, mu_to_hu

log = logging.getLogger(__name__)

NO_GEOMETRY = "artefact matching off: no projection geometry"
# Images finer than this are matched on a copy at this spacing (same outer box, so the same isocentre):
# ISO compares them on the model grid and native RSO on its 2 mm window, so a finer reprojection costs
# the cube of the ratio for nothing either step sees (docs/decisions.md).
MATCHING_SPACING_MM = 2.0


def matching_status(scans: ScanPair | None, wanted: bool) -> str:
    """One line for the log, the report and the Slicer status line: is matching on, and if not, why."""
    if scans is None:
        return NO_GEOMETRY
    if not scans.matchable:
        return f"artefact matching off: {scans.status()}"
    if not wanted:
        return "artefact matching off: turned off"
    beam = "parallel beam" if scans.fixed.geometry.is_parallel else "cone beam"
    views = " and ".join(str(g.count) for g in scans.geometries)
    return f"artefact matching on: {beam}, {views} views"


def reproject(
    image: sitk.Image,
    geometry: ProjectionGeometry,
    placement: Placement | None = None,
    clip_below_air: bool = True,
) -> sitk.Image:
    """The image projected through ``geometry`` and reconstructed again: float32 HU on the image's grid.

    Below-air values (streaks dip below -1000 HU) are clipped before projecting, as nothing attenuates
    less than air (``clip_below_air``; the choice is recorded in docs/decisions.md).
    """
    if geometry.is_parallel:
        return reproject_parallel(image, geometry.gantry_deg, clip_below_air)
    placement = placement or Placement.default()
    mu = hu_to_mu(placement.to_rtk(image), clip_below_air)
    detector = Detector.covering(mu, geometry)
    line_integrals = forward_project(mu, geometry, detector)
    reconstructed = fdk(line_integrals, geometry, detector, mu, FDK_HANN_CUT)
    return placement.from_rtk(mu_to_hu(reconstructed), image)


def match_artefacts(
    fixed: sitk.Image,
    moving: sitk.Image,
    geometries: tuple[ProjectionGeometry, ProjectionGeometry],
    placement: Placement | None = None,
) -> tuple[sitk.Image, sitk.Image]:
    """The fixed image seen through the moving image's geometry, and the moving image through the fixed's.

    Both then carry the streaks of both geometries: what a similarity compares between them is anatomy,
    not the difference between the two phases' streaks.
    """
    fixed_geometry, moving_geometry = geometries
    fixed, moving = matching_copy(fixed), matching_copy(moving)
    return reproject(fixed, moving_geometry, placement), reproject(moving, fixed_geometry, placement)


def matching_copy(image: sitk.Image) -> sitk.Image:
    """The image itself, or where it is finer than MATCHING_SPACING_MM a float32 copy no finer, covering the
    same outer box (its centre, the default isocentre, stays where it was)."""
    spacing = np.array(image.GetSpacing())
    if np.all(spacing >= MATCHING_SPACING_MM):
        return image
    extent = spacing * np.array(image.GetSize())
    size = np.maximum(np.round(extent / np.maximum(spacing, MATCHING_SPACING_MM)), 1).astype(int)
    new_spacing = extent / size
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - spacing) / 2)
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    reference.SetSpacing([float(v) for v in new_spacing])
    reference.SetOrigin([float(v) for v in origin])
    reference.SetDirection(image.GetDirection())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
