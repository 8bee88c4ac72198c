"""What a simulated cone-beam scan saw, and its phases as a vendor's console writes them.

A clinical scan has complete data only where every view of the turn (or the one opposite it) reaches the
panel: its field of view (``rso.core.projection.scan_field_of_view``). FDK still fills the rest of the grid
with a dark, streaked guess, which a console does not write: it reconstructs a cylinder and writes a
constant outside it, and only the slices its panel reaches along the rotation axis (docs/simulator.md, the
``-vendor`` presets).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
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


def reconstructed_slices(field_of_view: sitk.Image) -> slice:
    """The slices along the image's k axis (the rotation axis with the default placement) that a console
    writes: those ``field_of_view`` (uint8, 1 inside) reaches, cut by as many at each end, so that the
    image's centre (the isocentre, ``Placement.default``) and every geometry file stay valid."""
    reached = np.flatnonzero(sitk.GetArrayViewFromImage(field_of_view).any(axis=(1, 2)))
    if reached.size == 0:
        return slice(0, field_of_view.GetSize()[2])
    cut = min(int(reached[0]), field_of_view.GetSize()[2] - 1 - int(reached[-1]))
    return slice(cut, field_of_view.GetSize()[2] - cut)


def as_a_console_writes(phases: list, cbcts: list, masks: list, field_of_view: sitk.Image):
    """(phases, cbcts, masks, field_of_view) of a case as a console writes its phases: each CBCT air outside
    the field of view, and every image of the case (each phase's CT, truth and labels, the masks, the field
    of view) cut to ``reconstructed_slices``, so that the case's grids stay one."""
    slices = reconstructed_slices(field_of_view)

    def cut(image: sitk.Image | None) -> sitk.Image | None:
        return None if image is None else image[:, :, slices]

    cut_phases = [replace(p, ct=cut(p.ct), truth=cut(p.truth), labels=cut(p.labels)) for p in phases]
    cut_cbcts = [cut(air_outside(cbct, field_of_view)) for cbct in cbcts]
    return cut_phases, cut_cbcts, [cut(mask) for mask in masks], cut(field_of_view)
