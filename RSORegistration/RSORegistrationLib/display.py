"""How results look in the slice views: fixed as background, the difference as a coloured overlay.

Slicer ignores a colour table's alpha for scalar volumes, so a half-transparent overlay is not
possible. The difference (warped - fixed, HU) is instead shown with a diverging table that is
black at zero and composited with "Add": where the images agree nothing is added and the fixed
image shows unchanged; where the warped image is too bright the view turns red, too dark blue.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer

from rso.errors import InputError

log = logging.getLogger(__name__)

DIFFERENCE_COLORS_NAME = "RSO difference"
DIFFERENCE_LIMIT_HU = 400.0  # full colour at +-400 HU: soft tissue against lung saturates
NEUTRAL_BAND = 0.08  # |difference| below 8 % of the limit (32 HU, CT noise) stays black


def difference_color_table(scene):
    """The shared diverging table (blue - black - red), created once per scene."""
    existing = scene.GetFirstNodeByName(DIFFERENCE_COLORS_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", DIFFERENCE_COLORS_NAME)
    table.SetTypeToUser()
    count = 256
    table.SetNumberOfColors(count)
    for index, value in enumerate(np.linspace(-1.0, 1.0, count)):
        strength = 0.0 if abs(value) < NEUTRAL_BAND else min(1.0, (abs(value) - NEUTRAL_BAND) / (0.6 - NEUTRAL_BAND))
        rgb = (strength, 0.25 * strength, 0.0) if value > 0 else (0.0, 0.45 * strength, strength)
        table.SetColor(index, f"{value:+.2f}", *rgb, 1.0)
    table.SetAttribute("Category", "RSORegistration")
    return table


def show_difference_style(volume, limit_hu: float = DIFFERENCE_LIMIT_HU) -> None:
    """Give a difference volume the diverging table, centred on zero."""
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(difference_color_table(volume.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(2.0 * limit_hu, 0.0)
    display.SetInterpolate(False)


# Window/level presets for CT (HU): name -> (window, level); None keeps Slicer's automatic window.
WINDOW_LEVEL_PRESETS = {"auto": None, "lung": (1500.0, -600.0), "soft tissue": (400.0, 40.0)}


def apply_window_level(volume, preset: str) -> None:
    """Show an image volume with a named preset of WINDOW_LEVEL_PRESETS (the difference keeps its own)."""
    if preset not in WINDOW_LEVEL_PRESETS:
        raise InputError(f"window/level preset must be one of {list(WINDOW_LEVEL_PRESETS)}, not {preset!r}")
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    window_level = WINDOW_LEVEL_PRESETS[preset]
    if window_level is None:
        display.AutoWindowLevelOn()
    else:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(*window_level)


def show_in_slice_views(scene, background, foreground=None, opacity: float = 1.0) -> None:
    """Set every slice view's layers: background image and an additive foreground overlay."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity if foreground is not None else 0.0)
        composite.SetCompositing(slicer.vtkMRMLSliceCompositeNode.Add)


def style_region(roi, used: bool) -> None:
    """A region already refined is drawn green; a new one yellow, so the clinician sees what ran."""
    if roi.GetDisplayNode() is None:
        roi.CreateDefaultDisplayNodes()
    display = roi.GetDisplayNode()
    display.SetSelectedColor((0.2, 0.9, 0.3) if used else (1.0, 0.85, 0.1))
    display.SetColor((0.2, 0.9, 0.3) if used else (1.0, 0.85, 0.1))
    display.SetFillOpacity(0.0)  # the overlay inside the box is what the clinician reads
    display.SetPropertiesLabelVisibility(False)  # the name label would sit on the box's centre
    display.SetLineThickness(0.4)
