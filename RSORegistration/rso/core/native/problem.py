"""One box's native RSO problem: its window grid, the resampled images and the current field on it.

The window is the box + blend margin at the fixed image's spacing (1-2 mm, isotropic), independent of
the model grid; the moving image is cropped around wherever the current field (or an earlier state's)
sends the window's voxels (docs/architecture.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from rso.core.boxes import Box, VoxelBox
from rso.core.geometry import AIR_HU, ModelGrid, upsample_field
from rso.core.patches import add_patches
from rso.errors import InputError

# The window's spacing whatever the image's: the correction lives on an 8 mm control grid and both images are
# smoothed (presmooth_mm) before comparing, so a finer window costs the cube of the ratio (8x at 1 mm) for
# nothing the step can use; a box step then costs what its box costs (docs/decisions.md).
WINDOW_SPACING_MM = 2.0
REACH_MARGIN_MM = 20.0  # the moving crop extends this far beyond where the current field points


@dataclass(frozen=True)
class NativeProblem:
    """One box's refinement problem on its window.

    ``fixed`` and ``moving`` are (1, P, Z, Y, X) / (1, P, Zm, Ym, Xm) HU on the window and on the
    moving crop, one channel per image pair: channel 0 the pair the refinement fits, channel 1 (P = 2) the
    images as given where the fitted pair is artefact-matched (``unfitted``); ``base_index`` (Z, Y, X, 3)
    holds where the current field sends each window voxel, as (z, y, x) continuous indices of the moving
    crop; ``mm_to_index`` (3, 3) turns an LPS-mm correction into (z, y, x) index steps; ``box`` is the box
    on the window grid; ``fit_mask`` (Z, Y, X) bool on the window, where the similarity is measured within
    the box (None: the whole box; ``limit_to_fit_mask``); ``rotation_axis`` (3,) the scanner's rotation axis
    as an LPS unit vector where the projection geometry is known (None: unknown; the guard's axis share);
    ``moving_inside`` (1, 1, Zm, Ym, Xm) on the moving crop, 1 where it lies inside the moving image and 0
    where the crop is padded with air beyond it (None: not known; the guard's outside share).
    """

    window: ModelGrid
    fixed: torch.Tensor
    moving: torch.Tensor
    base_index: torch.Tensor
    mm_to_index: torch.Tensor
    box: VoxelBox
    margin_voxels: np.ndarray  # (z, y, x)
    current_mm: np.ndarray  # (Z, Y, X, 3) the current field on the window, LPS mm
    earlier_mm: tuple[np.ndarray, ...] = ()  # earlier states' fields on the window, each (Z, Y, X, 3) LPS mm
    fit_mask: np.ndarray | None = None
    matched: bool = False  # channel 0 is artefact-matched (else the images as given)
    rotation_axis: np.ndarray | None = None
    moving_inside: torch.Tensor | None = None

    def __post_init__(self):
        """Shapes checked up front, as MONAI's ``Warp.forward`` does: a mismatch would otherwise surface deep
        inside ``grid_sample`` or as a silent broadcast. Raises ValueError naming the array."""
        shape = tuple(self.window.shape)
        pairs = self.fixed.shape[1] if self.fixed.ndim == 5 else None
        _check_shape("fixed", self.fixed.shape, (1, None, *shape), "(1, P, Z, Y, X) on the window")
        _check_shape(
            "moving", self.moving.shape, (1, pairs, None, None, None), "(1, P, Zm, Ym, Xm), fixed's P"
        )
        _check_shape("base_index", self.base_index.shape, (*shape, 3), "(Z, Y, X, 3) on the window")
        _check_shape("mm_to_index", self.mm_to_index.shape, (3, 3), "(3, 3)")
        _check_shape("margin_voxels", np.shape(self.margin_voxels), (3,), "(z, y, x)")
        for name, field in [("current_mm", self.current_mm), *[("earlier_mm", e) for e in self.earlier_mm]]:
            _check_shape(name, np.shape(field), (*shape, 3), "(Z, Y, X, 3) on the window")
        if self.fit_mask is not None:
            _check_shape("fit_mask", np.shape(self.fit_mask), shape, "(Z, Y, X) on the window")
        if self.moving_inside is not None:
            crop = tuple(self.moving.shape[2:])
            _check_shape("moving_inside", self.moving_inside.shape, (1, 1, *crop), "(1, 1, Zm, Ym, Xm)")
        if self.rotation_axis is not None:
            _check_shape("rotation_axis", np.shape(self.rotation_axis), (3,), "(3,) LPS")
        if not all(0 <= lo < hi <= n for lo, hi, n in zip(self.box.lo, self.box.hi, shape)):
            raise ValueError(
                f"NativeProblem.box {self.box.lo}..{self.box.hi} must lie inside the window {shape}"
            )


def _check_shape(name: str, shape, expected: tuple, what: str) -> None:
    """ValueError unless ``shape`` matches ``expected`` (ints; None where any size goes)."""
    shape = tuple(shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        wanted = str(tuple("*" if e is None else e for e in expected)).replace("'", "")
        raise ValueError(f"NativeProblem.{name} must be {what}: {wanted}, got {shape}")


def window_grid(model_grid: ModelGrid, box: Box, margin_mm: float) -> tuple[ModelGrid, VoxelBox, np.ndarray]:
    """An isotropic grid along the model grid's axes covering the box, its margin and a border of zeros.

    The box is the model-grid voxels' cells (what the session's metrics call the box); the margin is
    the session's blend margin in model voxels, less one window voxel, so that the patch is exactly
    zero at every model voxel beyond box + margin (docs/architecture.md §4). Returns the grid, the
    box in its voxels and the margin in its voxels per axis (z, y, x).
    """
    spacing = WINDOW_SPACING_MM
    model_spacing = model_grid.voxel_size_mm()  # (z, y, x)
    reach_mm = np.ceil(margin_mm / model_spacing) * model_spacing + model_spacing / 2 - spacing
    margin = np.maximum(np.floor(reach_mm / spacing), 0).astype(int)
    lo, hi = np.array(box.voxels.lo) - 0.5, np.array(box.voxels.hi) - 0.5  # cell edges, model index (z, y, x)
    # Whole window voxels inside the box's cells: rounding up would let the margin reach past the model's.
    box_size = np.maximum(np.floor((hi - lo) * model_spacing / spacing + 1e-6).astype(int), 1)
    start = margin + 1  # one voxel of zeros outside the margin
    shape = box_size + 2 * start
    # Along the shared axes, the window's voxel 0 sits start - 0.5 window voxels before the box's first edge.
    corner = model_grid.index_to_lps_points(lo)
    # The model grid's axes (the fixed image's, nearest LPS): the box's extents above are along them.
    direction = np.array(model_grid.direction).reshape(3, 3)
    origin = corner - direction @ ((start - 0.5)[::-1] * spacing)
    grid = ModelGrid(
        tuple(int(n) for n in shape), (spacing,) * 3, tuple(origin.tolist()), model_grid.direction
    )
    voxels = VoxelBox(tuple(int(v) for v in start), tuple(int(v) for v in start + box_size))
    return grid, voxels, margin


def current_field_on(grid: ModelGrid, model_grid: ModelGrid, coarse_mm: np.ndarray, patches) -> np.ndarray:
    """The session's field (coarse + patches) at ``grid``'s voxel centres, (Z, Y, X, 3) LPS mm."""
    coarse = upsample_field(model_grid.field_image(coarse_mm), grid.reference_image())
    return add_patches(sitk.GetArrayFromImage(coarse).astype(np.float32), grid, patches)


def build_problem(
    images: tuple[sitk.Image, sitk.Image],
    box: Box,
    margin_mm: float,
    model_grid: ModelGrid,
    current: tuple,
    device: torch.device,
    earlier: tuple = (),
    unfitted: tuple[sitk.Image, sitk.Image] | None = None,
) -> NativeProblem:
    """Resample the fixed window, the current field and a moving crop that holds every target.

    ``images``: the (fixed, moving) images compared. ``current``: the session state's (coarse_mm,
    patches): its model-grid field (z, y, x, 3) in LPS mm and its fine patches.
    ``earlier``: (coarse_mm, patches) of earlier session states, candidate starts for the refinement.
    ``unfitted``: the same images seen another way, on the same grids (the images as given, where ``fixed``
    and ``moving`` are artefact-matched): evidence the current field was not fitted to, which judges a
    return to an earlier state (``Refinement.choose_return``).
    """
    fixed, moving = images
    window, box_voxels, margin = window_grid(model_grid, box, margin_mm)
    current = current_field_on(window, model_grid, *current)
    earlier_mm = tuple(
        current_field_on(window, model_grid, field, its_patches) for field, its_patches in earlier
    )
    voxels = window.index_to_lps_points(
        np.stack(np.meshgrid(*[np.arange(n) for n in window.shape], indexing="ij"), axis=-1)
    )
    points = voxels + current
    # The crop holds every target of every candidate start, so that none is judged on clamped samples.
    crop = _covering_grid(
        window, np.concatenate([points, *[voxels + e for e in earlier_mm]]), REACH_MARGIN_MM
    )
    pairs = ((fixed, moving),) if unfitted is None else ((fixed, moving), unfitted)
    fixed_hu = np.stack([sitk.GetArrayFromImage(_resample(f, window)) for f, _ in pairs])
    moving_hu = np.stack([sitk.GetArrayFromImage(_resample(m, crop)) for _, m in pairs])
    to_index = np.linalg.inv(crop.index_to_lps).T[:, ::-1]  # LPS mm (row) -> (z, y, x) index steps
    return NativeProblem(
        window,
        float_tensor(fixed_hu, device)[None],
        float_tensor(moving_hu, device)[None],
        float_tensor(crop.lps_to_index(points), device),
        float_tensor(to_index, device),
        box_voxels,
        margin,
        current,
        earlier_mm,
        moving_inside=float_tensor(_inside(moving, crop), device)[None, None],
    )


def _inside(image: sitk.Image, grid: ModelGrid) -> np.ndarray:
    """(Z, Y, X) on ``grid``: 1 inside ``image``'s volume, 0 beyond it (where its resampling is padded)."""
    region = _cut_to(image, grid)
    ones = sitk.Image(region.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(region)
    return sitk.GetArrayFromImage(_resample(ones, grid, default=0.0))


def limit_to_fit_mask(problem: NativeProblem, fit_mask: sitk.Image | None) -> NativeProblem:
    """The problem with its similarity limited to the box's voxels inside ``fit_mask`` (a binary image on
    any grid, nonzero inside, resampled to the window); the regularisers stay on the whole window.

    Raises InputError where the box holds no voxel of the mask: there is nothing there to fit.
    """
    if fit_mask is None:
        return problem
    # Cut the mask to the window first: no float32 copy of the whole mask at each step.
    binary = sitk.Cast(_cut_to(fit_mask, problem.window) != 0, sitk.sitkFloat32)
    inside = sitk.GetArrayFromImage(_resample(binary, problem.window, default=0.0)) > 0.5
    if not inside[problem.box.slices].any():
        raise InputError("the box lies outside the fit mask (--fit-mask): RSO has nothing to fit there")
    return replace(problem, fit_mask=inside)


def correction_tensor(field_mm: np.ndarray, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """A (Z, Y, X, 3) LPS-mm correction on the window as the (1, 3, Z, Y, X) tensor ``Refinement`` takes."""
    return float_tensor(field_mm.transpose(3, 0, 1, 2)[None], device)


def float_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 tensor on ``device`` (contiguous: torch cannot wrap numpy's strided views)."""
    return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)


def _covering_grid(window: ModelGrid, points_lps: np.ndarray, reach_mm: float) -> ModelGrid:
    """A grid on the window's lattice (same direction and spacing) covering ``points`` + ``reach``."""
    index = window.lps_to_index(points_lps.reshape(-1, 3))
    reach = reach_mm / window.spacing[0]
    lo, hi = np.floor(index.min(axis=0) - reach), np.ceil(index.max(axis=0) + reach)
    origin = window.index_to_lps_points(lo)
    shape = tuple(int(n) for n in (hi - lo + 1))
    return ModelGrid(shape, window.spacing, tuple(origin.tolist()), window.direction)


def _cut_to(image: sitk.Image, grid: ModelGrid) -> sitk.Image:
    """The part of ``image`` that linear interpolation onto ``grid`` reads: its voxels around the grid's
    corners' bounding box, one more on each side (the same samples as from the whole image)."""
    corners = np.stack(np.meshgrid(*[(0, n - 1) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    points = grid.index_to_lps_points(corners)
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
    size = np.array(image.GetSize())
    low = np.clip(np.floor(index.min(0)).astype(int) - 1, 0, size - 1)
    high = np.clip(np.ceil(index.max(0)).astype(int) + 1, low, size - 1)
    return sitk.RegionOfInterest(image, (high - low + 1).tolist(), low.tolist())


def _resample(image: sitk.Image, grid: ModelGrid, default: float = AIR_HU) -> sitk.Image:
    return sitk.Resample(
        image, grid.reference_image(), sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32
    )


def sample(volume: torch.Tensor, index_zyx: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``volume`` (1, C, Z, Y, X) at continuous (z, y, x) indices (Z', Y', X', 3):
    (1, C, Z', Y', X'), clamped at the border."""
    return sample_batch(volume, index_zyx[None])


def sample_batch(volume: torch.Tensor, index_zyx: torch.Tensor) -> torch.Tensor:
    """(B, C, Z, Y, X) sampled at (B, Z', Y', X', 3) (z, y, x) indices -> (B, C, Z', Y', X')."""
    size = torch.tensor(volume.shape[2:], dtype=index_zyx.dtype, device=index_zyx.device)
    normalised = 2.0 * index_zyx / (size - 1) - 1.0
    return F.grid_sample(
        volume, normalised.flip(-1), mode="bilinear", padding_mode="border", align_corners=True
    )
