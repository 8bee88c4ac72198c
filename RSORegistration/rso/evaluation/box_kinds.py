"""Automatic boxes: where the residual is worst, a stand-in for the clinician's eye.

The clinician sees the fixed and the warped image, not the truth, so the choice uses only the
residual between them, averaged over a box-sized window so that single streaks do not win. Like a
clinician who looks at the lungs, it counts only the region of interest (the session's evaluation
mask, when it has one): otherwise bowel gas below the diaphragm, which moves on its own, wins.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion, uniform_filter

from rso.errors import InputError
from rso.core.boxes import RegionBox, box_from_lps

BODY_THRESHOLD_HU = -500.0


def worst_residual_boxes(session, count: int = 1, size_mm: float = 40.0) -> list[RegionBox]:
    """Up to ``count`` non-overlapping cubes of ``size_mm`` with the largest mean squared residual."""
    grid = session.grid
    size = np.maximum(np.round(size_mm / grid.voxel_size_mm()).astype(int), 1)
    if np.any(size > np.array(grid.shape)):
        raise InputError(f"a {size_mm} mm box does not fit the model grid")
    residual = (session.warped_model_grid() - session.fixed_hu) ** 2
    region = session.evaluation_mask
    if region is not None and region.any():
        residual = np.where(region, residual, 0.0)
    score = uniform_filter(residual.astype(np.float64), size=size, mode="constant")
    allowed = _centres_inside(session.fixed_hu, region, size)
    boxes = []
    for _ in range(count):
        candidates = np.where(allowed, score, -np.inf)
        if not np.isfinite(candidates.max()):
            break
        centre = np.array(np.unravel_index(np.argmax(candidates), candidates.shape))
        boxes.append(_cube(grid, centre, size))
        # The next box's centre must be at least one box away on some axis: no overlap.
        lo, hi = np.maximum(centre - size + 1, 0), centre + size
        allowed[tuple(slice(a, b) for a, b in zip(lo, hi))] = False
    return boxes


def _centres_inside(fixed_hu: np.ndarray, region: np.ndarray | None, size: np.ndarray) -> np.ndarray:
    """Centres whose whole box fits the grid and that lie in the region (else well inside the body)."""
    if region is not None and region.any():
        body = region.copy()
    else:
        body = binary_erosion(fixed_hu > BODY_THRESHOLD_HU, iterations=2)
    half = size // 2
    fits = np.zeros_like(body)
    fits[tuple(slice(h, n - (s - h) + 1) for h, s, n in zip(half, size, body.shape))] = True
    return body & fits


def _cube(grid, centre: np.ndarray, size: np.ndarray) -> RegionBox:
    """The box of ``size`` voxels around ``centre``, as LPS corners on voxel edges."""
    lo = centre - size // 2
    corner_a = grid.index_to_lps_points(lo - 0.5)
    corner_b = grid.index_to_lps_points(lo + size - 0.5)
    return box_from_lps(grid, corner_a, corner_b)
