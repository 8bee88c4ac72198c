"""Projection and reconstruction: the scanner's geometry, RTK's cone-beam projector, artefact matching.

RTK (``itk-rtk``) is imported lazily inside the functions that need it: its first import costs ~20 s.
"""

from rso.core.projection.conebeam import (
    FOV_MASK,
    Detector,
    TVRecipe,
    fdk,
    forward_project,
    reconstruct,
    scan_field_of_view,
    tv_reconstruct,
)
from rso.core.projection.geometry import (
    PANEL_MM,
    RECONSTRUCTIONS,
    Placement,
    ProjectionGeometry,
    read_geometry,
    write_geometry,
)
from rso.core.projection.units import MU_WATER_PER_MM, hu_to_mu, mu_to_hu

__all__ = [
    "FOV_MASK",
    "MU_WATER_PER_MM",
    "PANEL_MM",
    "RECONSTRUCTIONS",
    "Detector",
    "Placement",
    "ProjectionGeometry",
    "TVRecipe",
    "fdk",
    "forward_project",
    "hu_to_mu",
    "mu_to_hu",
    "read_geometry",
    "reconstruct",
    "scan_field_of_view",
    "tv_reconstruct",
    "write_geometry",
]
