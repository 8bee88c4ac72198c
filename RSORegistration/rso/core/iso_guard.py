"""ISO's guard on the images as given: the pair ISO does not fit says whether its fit is anatomy.

Where both projection geometries are known, ISO fine-tunes on the artefact-matched pair. On cone-beam
streaks that fit can carry the field away from the anatomy (docs/results.md). The images as given show
the same anatomy under other streaks and are never fitted, so they judge the fit as a validation pair
would: ISO keeps its field only where the moving image as given, warped by it, is clearly more like the
fixed image as given (MIND: ``ISO_MIN_GIVEN_GAIN`` of the dissimilarity removed) than under the field ISO
started from (docs/decisions.md, *ISO's guard* and *ISO's guard needs a margin*).

Without the geometry there is no such pair, and ISO fits the streaks of phase-binned CBCT phases as
given. Breathing moves the lungs mostly along the body's superior-inferior axis, while a circular scan's
streaks lie in axial planes: a field fitted to them moves the lungs across that axis. There ISO keeps its
field only where its change in the lungs lies mostly along the axis (``ISO_MIN_AXIS_SHARE``; docs/
decisions.md, *ISO without projection geometry: the axis share*).
"""

from __future__ import annotations

import numpy as np
import torch

from rso.core.losses import masked_mean
from rso.core.mind import mind_ssc
from rso.core.native.guard import axis_share

LUNG_DENSITY_HU = (-950.0, -300.0)  # aerated lung, not air outside the body nor soft tissue
MIN_LUNG_VOXELS = 1000  # fewer model-grid voxels of lung density: no lungs to judge the change by
SUPERIOR = np.array([0.0, 0.0, 1.0])  # the body's superior-inferior axis in LPS


@torch.no_grad()
def given_dissimilarity(warp, given: tuple, field: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean squared MIND difference of the fixed image and the warped moving image as given.

    Args:
        warp: the network's warp, (moving (1, 1, z, y, x), displacement (1, 3, z, y, x) voxels) -> warped.
        given: (fixed, moving), each (1, 1, z, y, x) normalised on the model grid.
        field: (1, 3, z, y, x) displacement in model-grid voxels, fixed -> moving.
        mask: (1, 1, z, y, x) 0/1 where it counts (the fit mask), or None for the whole grid.
    """
    fixed, moving = given
    difference = (mind_ssc(warp(moving, field)) - mind_ssc(fixed)) ** 2
    return float(masked_mean(difference, torch.ones_like(fixed) if mask is None else mask))


def given_gain(warp, given: tuple, start: torch.Tensor, proposed: torch.Tensor, mask=None) -> float:
    """How much of the images' dissimilarity as given under ``start`` the ``proposed`` field removes:
    1 - d(proposed) / d(start); both fields (1, 3, z, y, x) model-grid voxels. Negative: it adds some."""
    before = given_dissimilarity(warp, given, start, mask)
    return 1.0 - given_dissimilarity(warp, given, proposed, mask) / max(before, 1e-12)


def lung_axis_share(
    change_mm: np.ndarray, fixed_hu: np.ndarray, mask: np.ndarray | None = None
) -> float | None:
    """How much of a field's change in the lungs lies along the body's superior-inferior axis.

    Args:
        change_mm: (z, y, x, 3) the change of the displacement (LPS mm) on the model grid.
        fixed_hu: (z, y, x) the fixed image (HU) on the same grid: its voxels of lung density count.
        mask: (z, y, x) bool, where the fit counts (the fit mask), or None for the whole grid.

    Returns mean |change . S| / mean |change| over those voxels (1: along the axis, 0: across it), or None
    where fewer than ``MIN_LUNG_VOXELS`` have lung density or nothing changed there.
    """
    lungs = (fixed_hu > LUNG_DENSITY_HU[0]) & (fixed_hu < LUNG_DENSITY_HU[1])
    if mask is not None:
        lungs &= mask
    if int(lungs.sum()) < MIN_LUNG_VOXELS:
        return None
    return axis_share(change_mm[lungs], SUPERIOR)
