"""What a simulated cone-beam scan saw, and its phases as a vendor's console writes them.

A clinical scan has complete data only where every view of the turn (or the one opposite it) reaches the
panel: its field of view (``rso.core.projection.scan_field_of_view``). FDK still fills the rest of the grid
with a dark, streaked guess, which a console does not write: it reconstructs a cylinder and writes a
constant outside it (docs/simulator.md, the ``-vendor`` presets).
"""

from __future__ import annotations

import SimpleITK as sitk

from rso.simulation.grid import AIR_HU


def scanned_field_of_view(ct: sitk.Image, preset) -> sitk.Image:
    """(uint8 on ct's grid, 1 inside) the preset's field of view on its panel (default placement): where a
    clinical scan has complete data at all."""
    from rso.core.projection import Detector, Placement, scan_field_of_view

    placement = Placement.default()
    full = preset.geometry()
    detector = Detector.covering(placement.rtk_grid(ct), full, preset.panel_mm)
    return scan_field_of_view(ct, placement, full, detector)


def air_outside(image: sitk.Image, field_of_view: sitk.Image) -> sitk.Image:
    """``image`` (HU) with every voxel outside ``field_of_view`` (uint8 on its grid, 1 inside) set to air."""
    return sitk.Mask(image, field_of_view, outsideValue=AIR_HU)
