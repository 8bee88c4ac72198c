"""How results look in the slice views: fixed as background, the difference or a quality map as a
coloured overlay.

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

from .volumes import voxels_view

log = logging.getLogger(__name__)

DIFFERENCE_COLORS_NAME = "RSO difference"
DIFFERENCE_LIMIT_HU = 400.0  # the window's half width for the default band: +-400 HU
NEUTRAL_BAND = 0.08  # |difference| below 8 % of the limit (32 HU, CT noise) stays black
DEFAULT_NEUTRAL_HU = NEUTRAL_BAND * DIFFERENCE_LIMIT_HU
SATURATION = 0.6  # of the limit: where the colour is full (240 HU: soft tissue against lung saturates)
COLOUR_RAMP_HU = 200.0  # a band's colour is full this far beyond it (at least)
# Phase images of a 4D CBCT differ by their noise and streaks by 100-200 HU everywhere (robust spread
# of warped - fixed in the body on the cone-beam benchmark's cases), which would colour 70-90 % of the
# body at 32 HU. The band grows to this many robust spreads, so that what stands out is the pair's
# largest differences (docs/decisions.md, "The difference overlay's band").
BAND_SPREADS = 2.0
BODY_HU = -900.0  # the spread is measured where the fixed image is denser than this (body and lungs)
# A sample of this many voxels at most: a median needs no more, and a 1 mm image (~50 M voxels)
# would otherwise cost a float64 copy of each image.
SPREAD_SAMPLE = 1_000_000
NEUTRAL_ATTRIBUTE = "RSORegistration.neutralHU"


def difference_band_hu(difference: np.ndarray, fixed: np.ndarray) -> float:
    """|warped - fixed| below this many HU stays black: the default band (32 HU) or BAND_SPREADS robust
    spreads (1.4826 x the median absolute deviation) of the difference inside the body, whichever is
    larger. ``difference`` and ``fixed``: arrays of one shape, HU (read, not copied whole)."""
    difference, fixed = difference.reshape(-1), fixed.reshape(-1)
    if difference.size > SPREAD_SAMPLE:  # a fixed seed: the same images always get the same band
        # random, not strided: a stride could fall on whole rows or columns of the grid
        picked = np.random.default_rng(0).integers(0, difference.size, SPREAD_SAMPLE)
        difference, fixed = difference[picked], fixed[picked]
    inside = difference[fixed > BODY_HU].astype(np.float64)
    if inside.size == 0:
        return DEFAULT_NEUTRAL_HU
    spread = 1.4826 * float(np.median(np.abs(inside - np.median(inside))))
    return max(DEFAULT_NEUTRAL_HU, BAND_SPREADS * spread)


def raised_band_hu(volume) -> float | None:
    """The band a difference volume was given where it is above the default one (else None)."""
    stored = volume.GetAttribute(NEUTRAL_ATTRIBUTE) if volume is not None else None
    return None if stored is None or _is_default_band(float(stored)) else float(stored)


def _is_default_band(neutral_hu: float) -> bool:
    """Whole HU decide: a band within half an HU of the default is drawn and named as the default."""
    return round(neutral_hu) <= round(DEFAULT_NEUTRAL_HU)


def difference_limit_hu(neutral_hu: float) -> float:
    """The window's half width: colour is full at SATURATION of it, COLOUR_RAMP_HU beyond the band or more."""
    return max(DIFFERENCE_LIMIT_HU, (neutral_hu + COLOUR_RAMP_HU) / SATURATION)


def difference_color_table(scene, neutral_hu: float = DEFAULT_NEUTRAL_HU):
    """The diverging table (blue - black - red) for a band, created once per scene and band: black
    within +-``neutral_hu`` of zero over a window of +-``difference_limit_hu(neutral_hu)``."""
    band = neutral_hu / difference_limit_hu(neutral_hu)
    name = (
        DIFFERENCE_COLORS_NAME
        if _is_default_band(neutral_hu)
        else f"{DIFFERENCE_COLORS_NAME} (black within {neutral_hu:.0f} HU)"
    )
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    count = 256
    table.SetNumberOfColors(count)
    for index, value in enumerate(np.linspace(-1.0, 1.0, count)):
        strength = 0.0 if abs(value) < band else min(1.0, (abs(value) - band) / (SATURATION - band))
        rgb = (strength, 0.25 * strength, 0.0) if value > 0 else (0.0, 0.45 * strength, strength)
        table.SetColor(index, f"{value:+.2f}", *rgb, 1.0)
    table.SetAttribute("Category", "RSORegistration")
    return table


def show_difference_style(volume, fixed_volume=None) -> float:
    """Give a difference volume the diverging table, centred on zero; returns its band in HU.

    The band is measured once per difference volume (against ``fixed_volume``; the default band
    without it) and kept on the node, so that it stays the same from one step to the next.
    """
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    stored = volume.GetAttribute(NEUTRAL_ATTRIBUTE)
    if stored is not None:
        neutral_hu = float(stored)
    elif fixed_volume is not None:
        neutral_hu = difference_band_hu(
            voxels_view(volume.GetImageData()), voxels_view(fixed_volume.GetImageData())
        )
        volume.SetAttribute(NEUTRAL_ATTRIBUTE, f"{neutral_hu:.1f}")
    else:
        neutral_hu = DEFAULT_NEUTRAL_HU
    display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(difference_color_table(volume.GetScene(), neutral_hu).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(2.0 * difference_limit_hu(neutral_hu), 0.0)
    display.SetInterpolate(False)
    return neutral_hu


# Quality maps (rso.core.quality), shown like the difference: black where all is well, added to the
# fixed image, so only what deserves a look is coloured.
JACOBIAN_COLORS_NAME = "RSO det J"
JACOBIAN_RANGE = (0.0, 2.0)  # centred on 1 (volume kept); <= 0 saturates at the folding colour
JACOBIAN_NEUTRAL = 0.1  # |det J - 1| below this (10 % volume change) stays black
FOLDING_COLORS_NAME = "RSO folding"
CHANGE_COLORS_NAME = "RSO change"
CHANGE_LIMIT_MM = 5.0  # full colour at 5 mm of change in the last step
CHANGE_NEUTRAL_MM = 0.1  # what the last step did not touch stays black
FOLDING_RGB = (1.0, 1.0, 0.0)  # yellow: det J <= 0


def _user_table(scene, name: str, colors) -> object:
    """A shared user colour table (created once per scene) from a list of (label, r, g, b)."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(colors))
    for index, (label, red, green, blue) in enumerate(colors):
        table.SetColor(index, label, red, green, blue, 1.0)
    table.SetAttribute("Category", "RSORegistration")
    return table


def jacobian_color_table(scene):
    """det J over [0, 2]: yellow at <= 0 (folding), blue compressed, black near 1, red stretched."""
    low, high = JACOBIAN_RANGE
    colors = []
    for value in np.linspace(low, high, 256):
        strength = min(1.0, max(0.0, abs(value - 1.0) - JACOBIAN_NEUTRAL) / (0.6 - JACOBIAN_NEUTRAL))
        rgb = (strength, 0.25 * strength, 0.0) if value > 1.0 else (0.0, 0.45 * strength, strength)
        colors.append((f"{value:.3f}", *(FOLDING_RGB if value <= 0.0 else rgb)))
    return _user_table(scene, JACOBIAN_COLORS_NAME, colors)


def folding_color_table(scene):
    return _user_table(scene, FOLDING_COLORS_NAME, [("not folded", 0.0, 0.0, 0.0), ("folded", *FOLDING_RGB)])


def change_color_table(scene):
    """|change| over [0, CHANGE_LIMIT_MM]: black where unchanged, then dark red -> orange -> yellow."""
    colors = []
    for value in np.linspace(0.0, CHANGE_LIMIT_MM, 256):
        t = 0.0 if value < CHANGE_NEUTRAL_MM else 0.25 + 0.75 * value / CHANGE_LIMIT_MM
        colors.append(
            (f"{value:.2f} mm", min(1.0, 1.6 * t), max(0.0, 1.6 * t - 0.6), max(0.0, 2.0 * t - 1.6))
        )
    return _user_table(scene, CHANGE_COLORS_NAME, colors)


QUALITY_STYLES = {  # map name -> (colour table, (lowest, highest) value of the table)
    "jacobian": (jacobian_color_table, JACOBIAN_RANGE),
    "folding": (folding_color_table, (0.0, 1.0)),
    "change": (change_color_table, (0.0, CHANGE_LIMIT_MM)),
}


def show_quality_style(volume, name: str) -> None:
    """Give a quality map volume ("jacobian", "folding" or "change") its colour table and range."""
    make_table, (low, high) = QUALITY_STYLES[name]
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(make_table(volume.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
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
