"""The session's transform in the form it has, as one ITK composite transform (``transform.h5``).

The field is a coarse part ``c`` on the model grid plus fine patches ``p`` (native RSO), added:
``x -> x + c(x) + p(x)``. ITK composes transforms rather than adding them, so each group of
overlapping patches is written as a correction ``q`` on its own native-resolution window such that
the composition matches the sum at every window voxel: ``x + q(x) + c(x + q(x)) = x + c(x) + p(x)``,
i.e. ``q = p + c(x) - c(x + q)``, solved by fixed-point iteration (it converges where ``c`` is
smooth, |grad c| < 1). With an initial transform T0 its parts come last, as in ``rso.core.initial``.

The file holds the model-grid field and each window, not a dense field at the fixed image's
resolution: at 1 mm that is tens of MB instead of about a GB. SimpleITK, ANTs and Slicer read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import map_coordinates

from rso.core.geometry import ModelGrid, physical_corners
from rso.core.initial import parts
from rso.core.patches import FieldPatch

ITERATIONS = 20  # fixed-point iterations for q; each shrinks the error by about |grad c|
TOLERANCE_MM = 1e-4  # stop once no window voxel changes by more than this


@dataclass(frozen=True)
class CoarseField:
    """``field_mm`` (z, y, x, 3) LPS mm on ``grid`` (the model grid), sampled as ITK samples it."""

    grid: ModelGrid
    field_mm: np.ndarray

    def sample(self, points_lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS mm at LPS points (N, 3): trilinear, zero outside the grid (as ITK's transform)."""
        index = self.grid.lps_to_index(points_lps).T
        return np.stack(
            [map_coordinates(self.field_mm[..., c], index, order=1, mode="constant") for c in range(3)],
            axis=-1,
        )

    def transform(self) -> sitk.DisplacementFieldTransform:
        return sitk.DisplacementFieldTransform(self.grid.field_image(self.field_mm))

    def padded(self, cover: sitk.Image | None = None) -> CoarseField:
        """Voxels added on every side, holding the edge's values, one at least and enough to reach past
        ``cover``'s outer box (the fixed image, which the model grid may frame only part of:
        ``rso.core.body``): beyond the outermost voxel centres the field keeps its edge value (as
        ``geometry.upsample_field`` extrapolates), where an ITK displacement field transform would fall to
        zero."""
        grid = self.grid
        before, after = np.ones(3, int), np.ones(3, int)
        if cover is not None:
            index = grid.lps_to_index(physical_corners(cover))  # (8, 3) (z, y, x)
            before = np.maximum(before, np.ceil(-index.min(axis=0)).astype(int))
            after = np.maximum(after, np.ceil(index.max(axis=0) - (np.array(grid.shape) - 1)).astype(int))
        origin = grid.index_to_lps_points(-before.astype(float))
        shape = tuple(int(n + b + a) for n, b, a in zip(grid.shape, before, after))
        padded = np.pad(self.field_mm, (*zip(before, after), (0, 0)), mode="edge")
        return CoarseField(
            ModelGrid(shape, grid.spacing, tuple(float(v) for v in origin), grid.direction), padded
        )


def session_transform(
    coarse: CoarseField, patches, initial: sitk.Transform | None = None, cover: sitk.Image | None = None
) -> sitk.Transform:
    """T0 o C o Q_1 o ... o Q_n: one ITK transform equal to the session's field (fixed -> moving).

    ``patches``: the state's FieldPatch list; ``initial``: T0 or None; ``cover``: the fixed image, which
    the transform's coarse field reaches past (``CoarseField.padded``). A field without patches and T0 is a
    plain displacement field transform."""
    coarse = coarse.padded(cover)
    corrections = [_correction_transform(coarse, group) for group in overlapping_groups(patches)]
    pieces = [*(parts(initial) if initial is not None else []), coarse.transform(), *corrections]
    return pieces[0] if len(pieces) == 1 else sitk.CompositeTransform(pieces)


def overlapping_groups(patches) -> list[list[FieldPatch]]:
    """Patches whose windows (grown by the largest displacement in them) overlap share a group, so
    that no group's correction moves a point into another group's window."""
    groups: list[tuple[np.ndarray, np.ndarray, list]] = []
    for patch in patches:
        lo, hi = _bounds(patch)
        merged = [g for g in groups if np.all(lo <= g[1]) and np.all(g[0] <= hi)]
        for group in merged:
            groups.remove(group)
            lo, hi = np.minimum(lo, group[0]), np.maximum(hi, group[1])
        groups.append((lo, hi, [p for g in merged for p in g[2]] + [patch]))
    return [group[2] for group in groups]


def _bounds(patch: FieldPatch) -> tuple[np.ndarray, np.ndarray]:
    """The window's LPS bounding box, grown by the patch's largest displacement (mm)."""
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in patch.grid.shape], indexing="ij")).reshape(3, -1).T
    points = patch.grid.index_to_lps_points(corners)
    reach = float(np.abs(patch.delta_mm).max()) if patch.delta_mm.size else 0.0
    return points.min(axis=0) - reach, points.max(axis=0) + reach


def _correction_transform(coarse: CoarseField, group: list[FieldPatch]) -> sitk.Transform:
    """Q for one group of patches, on a window covering all of them (the first patch's spacing)."""
    grid = _covering_grid(group)
    voxels = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1)
    points = grid.index_to_lps_points(voxels.reshape(-1, 3))
    p = sum(patch.sample(points) for patch in group).astype(np.float64)  # at the window's voxels
    wanted, q = p + coarse.sample(points), p  # the sum, and its first guess
    for _ in range(ITERATIONS):
        updated = wanted - coarse.sample(points + q)
        change = float(np.abs(updated - q).max()) if q.size else 0.0
        q = updated
        if change < TOLERANCE_MM:
            break
    return sitk.DisplacementFieldTransform(grid.field_image(q.reshape(*grid.shape, 3)))


def _covering_grid(group: list[FieldPatch]) -> ModelGrid:
    """The first patch's grid, grown to hold every window of the group (same spacing and direction)."""
    first = group[0].grid
    lo, hi = np.zeros(3), np.array(first.shape, float) - 1
    for patch in group[1:]:
        corners = np.array(np.meshgrid(*[(0, n - 1) for n in patch.grid.shape], indexing="ij")).reshape(3, -1)
        index = first.lps_to_index(patch.grid.index_to_lps_points(corners.T))
        lo, hi = np.minimum(lo, np.floor(index.min(axis=0))), np.maximum(hi, np.ceil(index.max(axis=0)))
    origin = first.index_to_lps_points(lo)
    shape = tuple(int(n) for n in (hi - lo + 1))
    return ModelGrid(shape, first.spacing, tuple(float(v) for v in origin), first.direction)
