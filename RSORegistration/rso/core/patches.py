"""Fine-resolution corrections of the displacement field, each on a window grid of its own.

The session's field is a coarse field on the model grid plus the patches that native-resolution
RSO steps added on top of it. A patch holds the correction already multiplied by its blend
weights, so it is exactly zero beyond its box + margin: adding it cannot move the field anywhere
else (docs/architecture.md §4, local composition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from rso.core.geometry import ModelGrid


@dataclass(frozen=True)
class FieldPatch:
    """``delta_mm`` (z, y, x, 3), LPS mm, on ``grid`` (any spacing, the model grid's direction)."""

    grid: ModelGrid
    delta_mm: np.ndarray

    def __post_init__(self):
        if self.delta_mm.shape != (*self.grid.shape, 3):
            raise ValueError(
                f"patch of shape {self.delta_mm.shape} does not match its grid {self.grid.shape}"
            )

    def sample(self, points_lps: np.ndarray) -> np.ndarray:
        """The correction (N, 3) LPS mm at LPS points (N, 3): trilinear, zero outside the window."""
        index = self.grid.lps_to_index(points_lps).T  # (3, N), array order (z, y, x)
        return np.stack(
            [
                map_coordinates(self.delta_mm[..., c], index, order=1, mode="constant", cval=0.0)
                for c in range(3)
            ],
            axis=-1,
        ).astype(np.float32)

    def on_grid(self, grid: ModelGrid) -> tuple[tuple[slice, ...], np.ndarray]:
        """The correction at the voxel centres of ``grid`` where it can be non-zero.

        Returns the slices of ``grid`` that cover the window and the (z, y, x, 3) LPS-mm values
        there; everywhere else on ``grid`` the correction is zero.
        """
        slices = self.window_on(grid)
        block = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in slices], indexing="ij"), axis=-1)
        values = self.sample(grid.index_to_lps_points(block.reshape(-1, 3)))
        return slices, values.reshape(*block.shape[:3], 3)

    def window_on(self, grid: ModelGrid) -> tuple[slice, slice, slice]:
        """The (z, y, x) slices of ``grid`` outside which the correction is zero (clipped to ``grid``)."""
        corners = self.grid.index_to_lps_points(
            np.array(np.meshgrid(*[(-1, n) for n in self.grid.shape], indexing="ij")).reshape(3, -1).T
        )
        index = grid.lps_to_index(corners)
        lo = np.clip(np.floor(index.min(axis=0)).astype(int), 0, grid.shape)
        hi = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, grid.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def to_arrays(self) -> dict[str, np.ndarray]:
        g = self.grid
        return {
            "shape": np.array(g.shape),
            "spacing": np.array(g.spacing),
            "origin": np.array(g.origin),
            "direction": np.array(g.direction),
            "delta_mm": self.delta_mm,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FieldPatch:
        grid = ModelGrid(
            tuple(int(n) for n in arrays["shape"]),
            tuple(map(float, arrays["spacing"])),
            tuple(map(float, arrays["origin"])),
            tuple(map(float, arrays["direction"])),
        )
        return cls(grid, arrays["delta_mm"].astype(np.float32))


def add_patches(field_mm: np.ndarray, grid: ModelGrid, patches, copy: bool = True) -> np.ndarray:
    """A (z, y, x, 3) LPS-mm field on ``grid`` with every patch added: a new float32 array, or with
    ``copy`` False ``field_mm`` itself (a writable float32 array: no second field's worth of memory)."""
    total = np.array(field_mm, np.float32, copy=True) if copy else field_mm
    for patch in patches:
        slices, values = patch.on_grid(grid)
        total[slices] += values
    return total
