"""Region boxes: a box the user asks for (LPS or RAS mm, or fixed-image indices) and its model-grid voxels.

An empty or degenerate box is a clear error, never an all-zero mask (docs/architecture.md §3).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import ModelGrid, lps_to_ras, ras_to_lps
from rso.errors import InputError


@dataclass(frozen=True)
class VoxelBox:
    """A box of model-grid voxels, [lo, hi) along (z, y, x)."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))

    def expanded(self, by, shape) -> VoxelBox:
        """Grown by ``by`` voxels per axis (scalar or (z, y, x)), clipped to a grid of ``shape``."""
        by = np.broadcast_to(np.asarray(by, int), (3,))
        lo = np.maximum(np.array(self.lo) - by, 0)
        hi = np.minimum(np.array(self.hi) + by, shape)
        return VoxelBox(tuple(lo.tolist()), tuple(hi.tolist()))

    def mask(self, shape) -> np.ndarray:
        inside = np.zeros(shape, bool)
        inside[self.slices] = True
        return inside

    def to_dict(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi)}

    @classmethod
    def from_dict(cls, data: dict) -> VoxelBox:
        return cls(tuple(data["lo"]), tuple(data["hi"]))


@dataclass(frozen=True)
class Box:
    """A region the user asked for, in LPS millimetres, with its voxels on the model grid."""

    lps_min: tuple[float, float, float]
    lps_max: tuple[float, float, float]
    voxels: VoxelBox

    @property
    def ras_corners(self) -> list[float]:
        """[R1, A1, S1, R2, A2, S2], lowest corner first, as Slicer shows it."""
        a, b = lps_to_ras(self.lps_min), lps_to_ras(self.lps_max)
        return np.concatenate([np.minimum(a, b), np.maximum(a, b)]).round(4).tolist()

    def to_dict(self) -> dict:
        return {"lps_min": list(self.lps_min), "lps_max": list(self.lps_max), "voxels": self.voxels.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> Box:
        return cls(tuple(data["lps_min"]), tuple(data["lps_max"]), VoxelBox.from_dict(data["voxels"]))


def box_from_lps(grid: ModelGrid, corner_a, corner_b) -> Box:
    """The model-grid voxels whose centres lie in the axis-aligned LPS box with these corners."""
    a, b = np.asarray(corner_a, float), np.asarray(corner_b, float)
    if a.shape != (3,) or b.shape != (3,) or not np.isfinite([a, b]).all():
        raise InputError("a box needs two finite 3-D corners")
    if np.any(np.abs(b - a) <= 0):
        raise InputError(
            f"box has zero size along an axis: corners {lps_to_ras(a).tolist()} and "
            f"{lps_to_ras(b).tolist()} (RAS mm)"
        )
    return _box_around(grid, np.array(list(itertools.product(*zip(a, b)))))


def _box_around(grid: ModelGrid, corners_lps: np.ndarray) -> Box:
    """Voxels whose centres lie inside the corners' box in model-index space, clipped to the grid.

    Exact when the box is axis-aligned on the grid; for an oblique grid and an LPS-aligned box it
    is the bounding box of that set.
    """
    lps_min, lps_max = corners_lps.min(axis=0), corners_lps.max(axis=0)
    index = grid.lps_to_index(corners_lps)
    eps = 1e-6
    lo = np.ceil(index.min(axis=0) - eps).astype(int)
    hi = np.floor(index.max(axis=0) + eps).astype(int) + 1
    lo_clipped, hi_clipped = np.maximum(lo, 0), np.minimum(hi, grid.shape)
    if np.any(hi_clipped <= lo_clipped):
        if np.any(hi <= 0) or np.any(lo >= np.array(grid.shape)):
            a, b = lps_to_ras(lps_min), lps_to_ras(lps_max)
            ras_a, ras_b = (np.round(corner(a, b), 1).tolist() for corner in (np.minimum, np.maximum))
            raise InputError(
                f"box {ras_a}..{ras_b} (RAS mm) lies outside the image (or outside the body's frame, where a "
                "CT reaches far beyond the body: docs/cli.md)"
            )
        raise InputError("box is smaller than one model-grid voxel; draw a larger box")
    voxels = VoxelBox(tuple(lo_clipped.tolist()), tuple(hi_clipped.tolist()))
    return Box(tuple(lps_min.tolist()), tuple(lps_max.tolist()), voxels)


def box_from_ras(grid: ModelGrid, ras: list[float]) -> Box:
    """A box given as [R1, A1, S1, R2, A2, S2] in millimetres (Slicer's view)."""
    if len(ras) != 6:
        raise InputError(f"a RAS box needs 6 numbers R1,A1,S1,R2,A2,S2; got {len(ras)}")
    return box_from_lps(grid, ras_to_lps(ras[:3]), ras_to_lps(ras[3:]))


def box_from_fixed_index(grid: ModelGrid, fixed: sitk.Image, ijk: list[float]) -> Box:
    """A box given as fixed-image voxel indices [I1, J1, K1, I2, J2, K2], both ends included."""
    if len(ijk) != 6:
        raise InputError(f"an index box needs 6 numbers I1,J1,K1,I2,J2,K2; got {len(ijk)}")
    a = np.minimum(ijk[:3], ijk[3:]).astype(float)
    b = np.maximum(ijk[:3], ijk[3:]).astype(float)
    size = np.array(fixed.GetSize())
    if np.any(b < 0) or np.any(a > size - 1):
        raise InputError(f"index box {list(ijk)} lies outside the fixed image of size {tuple(size.tolist())}")
    # Voxel edges, so that the box covers the voxels it names; all 8 corners, for oblique images.
    corners = [
        fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in c])
        for c in itertools.product(*zip(a - 0.5, b + 0.5))
    ]
    return _box_around(grid, np.array(corners))


def axial_end_distance_mm(image: sitk.Image, box: Box, axis=(0.0, 0.0, 1.0)) -> float:
    """How far (mm) the box lies from ``image``'s nearer end along ``axis`` (an LPS unit vector; default the
    superior-inferior axis): the gap between the box's corners and the image's outer faces projected on
    it (negative where the box reaches beyond)."""
    axis = np.asarray(axis, float)
    size = np.array(image.GetSize())
    faces = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in size])))
    image_along = [np.dot(image.TransformContinuousIndexToPhysicalPoint(c.tolist()), axis) for c in faces]
    box_along = [np.dot(c, axis) for c in itertools.product(*zip(box.lps_min, box.lps_max))]
    return float(min(min(box_along) - min(image_along), max(image_along) - max(box_along)))
