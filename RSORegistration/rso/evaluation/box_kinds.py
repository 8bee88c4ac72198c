"""Automatic boxes for the evaluation: three stand-ins for where a clinician would draw one.

* ``misaligned``: where the field's error against the truth is worst, a clinician who correctly
  spots misaligned anatomy (the truth only places the box; the method never sees it).
* ``residual``: where the image residual is worst, a clinician who looks only at the images
  (averaged over a box-sized window so that single streaks do not win).
* ``control``: where the field is already good (box TRE below the case's median box TRE): there
  RSO must do no harm.

All count only the region of interest (the session's evaluation mask, the lungs): otherwise bowel
gas below the diaphragm, which moves on its own, wins. With a truth, a box whose true
correspondences leave the moving image's field of view is never chosen: no method can recover
anatomy the moving image does not hold.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion, uniform_filter

from rso.core.boxes import Box, box_from_lps
from rso.core.geometry import physical_bounds
from rso.errors import InputError

BODY_THRESHOLD_HU = -500.0
MIN_REGION_FRACTION = (
    0.3  # a box holds at least this much of the region of interest: its metrics mean something
)
BOX_KINDS = ("misaligned", "residual", "control")


def pick_boxes(session, kind: str, count: int = 1, size_mm: float = 40.0, seed: int = 0) -> list[Box]:
    """Up to ``count`` non-overlapping cubes of ``size_mm`` of one kind, for the session's current field."""
    if kind not in BOX_KINDS:
        raise InputError(f"box kind must be one of {BOX_KINDS}, not {kind!r}")
    if kind != "residual" and session.truth_mm is None:
        raise InputError(f"{kind} boxes need a ground-truth field")
    size = _box_voxels(session, size_mm)
    allowed = _centres_inside(session.fixed_hu, session.evaluation_mask, size)
    if session.truth_mm is not None:
        allowed &= _targets_in_view(session, size)
    if kind == "control":
        return _control(session, size, allowed, count, np.random.default_rng(seed))
    score = _box_mean(_tre_map(session) if kind == "misaligned" else _residual_map(session), session, size)
    return _best(session.grid, score, allowed, size, count)


def worst_residual_boxes(session, count: int = 1, size_mm: float = 40.0) -> list[Box]:
    """The ``residual`` kind: the boxes with the largest mean squared image residual."""
    return pick_boxes(session, "residual", count, size_mm)


def box_tre_map(session, size_mm: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """(mean TRE of the box centred at each model voxel in mm, where such a box may be placed)."""
    size = _box_voxels(session, size_mm)
    allowed = _centres_inside(session.fixed_hu, session.evaluation_mask, size) & _targets_in_view(
        session, size
    )
    return _box_mean(_tre_map(session), session, size), allowed


def _box_voxels(session, size_mm: float) -> np.ndarray:
    grid = session.grid
    size = np.maximum(np.round(size_mm / grid.voxel_size_mm()).astype(int), 1)
    if np.any(size > np.array(grid.shape)):
        raise InputError(f"a {size_mm} mm box does not fit the model grid")
    return size


def _tre_map(session) -> np.ndarray:
    return np.linalg.norm(session.field_mm.astype(np.float64) - session.truth_mm, axis=-1)


def _residual_map(session) -> np.ndarray:
    return ((session.warped_model_grid() - session.fixed_hu) ** 2).astype(np.float64)


def _box_mean(values: np.ndarray, session, size: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over the region of interest in a box centred at each voxel."""
    region = session.evaluation_mask
    if region is None or not region.any():
        return uniform_filter(values, size=size, mode="constant")
    total = uniform_filter(np.where(region, values, 0.0), size=size, mode="constant")
    count = uniform_filter(region.astype(np.float64), size=size, mode="constant")
    return np.where(count > 0, total / np.maximum(count, 1e-12), 0.0)


def _targets_in_view(session, size: np.ndarray) -> np.ndarray:
    """Centres whose whole box maps, under the truth, into the moving image's field of view."""
    grid = session.grid
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1)
    targets = grid.index_to_lps_points(index) + session.truth_mm
    lo, hi = physical_bounds(session.moving)
    outside = np.any((targets < lo) | (targets > hi), axis=-1)
    return uniform_filter(outside.astype(np.float64), size=size, mode="constant") <= 0


def _centres_inside(fixed_hu: np.ndarray, region: np.ndarray | None, size: np.ndarray) -> np.ndarray:
    """Centres whose whole box fits the grid and that lie in the region (else well inside the body)."""
    if region is not None and region.any():
        fraction = uniform_filter(region.astype(np.float64), size=size, mode="constant")
        body = region & (fraction >= MIN_REGION_FRACTION)
    else:
        body = binary_erosion(fixed_hu > BODY_THRESHOLD_HU, iterations=2)
    half = size // 2
    fits = np.zeros_like(body)
    fits[tuple(slice(h, n - (s - h) + 1) for h, s, n in zip(half, size, body.shape))] = True
    return body & fits


def _best(grid, score: np.ndarray, allowed: np.ndarray, size: np.ndarray, count: int) -> list[Box]:
    """The highest-scoring centres, each at least one box away from the ones before."""
    allowed = allowed.copy()
    boxes = []
    for _ in range(count):
        candidates = np.where(allowed, score, -np.inf)
        if not np.isfinite(candidates.max()):
            break
        centre = np.array(np.unravel_index(np.argmax(candidates), candidates.shape))
        boxes.append(_cube(grid, centre, size))
        _exclude_overlap(allowed, centre, size)
    return boxes


def _control(session, size: np.ndarray, allowed: np.ndarray, count: int, rng) -> list[Box]:
    """Random centres (seeded) among those whose box TRE is below the median of all allowed boxes."""
    score = _box_mean(_tre_map(session), session, size)
    if not allowed.any():
        return []
    allowed = allowed & (score < np.median(score[allowed]))
    boxes = []
    for _ in range(count):
        candidates = np.argwhere(allowed)
        if not len(candidates):
            break
        centre = candidates[rng.integers(len(candidates))]
        boxes.append(_cube(session.grid, centre, size))
        _exclude_overlap(allowed, centre, size)
    return boxes


def _exclude_overlap(allowed: np.ndarray, centre: np.ndarray, size: np.ndarray) -> None:
    """The next box's centre must be at least one box away on some axis: no overlap."""
    lo, hi = np.maximum(centre - size + 1, 0), centre + size
    allowed[tuple(slice(a, b) for a, b in zip(lo, hi))] = False


def _cube(grid, centre: np.ndarray, size: np.ndarray) -> Box:
    """The box of ``size`` voxels around ``centre``, as LPS corners on voxel edges."""
    lo = centre - size // 2
    corner_a = grid.index_to_lps_points(lo - 0.5)
    corner_b = grid.index_to_lps_points(lo + size - 0.5)
    return box_from_lps(grid, corner_a, corner_b)
