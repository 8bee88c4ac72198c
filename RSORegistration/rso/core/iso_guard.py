"""ISO's guard on the images as given: the pair ISO does not fit says whether its fit is anatomy.

Where both projection geometries are known, ISO fine-tunes on the artefact-matched pair. On cone-beam
streaks that fit can carry the field away from the anatomy (docs/results.md). The images as given show
the same anatomy under other streaks and are never fitted, so they judge the fit as a validation pair
would: ISO keeps its field only where the moving image as given, warped by it, is clearly more like the
fixed image as given (MIND: ``ISO_MIN_GIVEN_GAIN`` of the dissimilarity removed) than under the field ISO
started from (docs/decisions.md, *ISO's guard* and *ISO's guard needs a margin*).
"""

from __future__ import annotations

import torch

from rso.core.losses import masked_mean
from rso.core.mind import mind_ssc


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
