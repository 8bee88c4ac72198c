"""The model grid, displacement units, RAS/LPS and region boxes: the one place for geometry.

Conventions (docs/architecture.md §3):
* SimpleITK images and points are LPS. Slicer shows RAS. ``ras_to_lps`` is the only conversion.
* The model grid covers the fixed image's physical box with ``shape`` = (z, y, x) voxels along the
  fixed image's axes nearest L, P and S (``nearest_lps_axes``). Arrays on it are indexed [z, y, x].
* Inside the engine a displacement field is a (3, z, y, x) array in model-grid voxels, channels
  (dz, dy, dx): MONAI's ``Warp`` convention. It maps fixed voxels to moving voxels. At every
  boundary it becomes a (z, y, x, 3) field of LPS millimetres.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from rso.errors import InputError

# The UNet has four stride-2 levels, so every model-grid (and crop) size must divide by 2**4.
GRID_MULTIPLE = 16
AIR_HU = -1000.0


def ras_to_lps(points) -> np.ndarray:
    """RAS <-> LPS (the same sign flip both ways) for points or vectors in the last axis."""
    flipped = np.array(points, dtype=float, copy=True)
    flipped[..., :2] *= -1
    return flipped


lps_to_ras = ras_to_lps


@dataclass(frozen=True)
class ModelGrid:
    """The regular grid the network sees: the fixed image's field of view, resampled."""

    shape: tuple[int, int, int]  # (z, y, x)
    spacing: tuple[float, float, float]  # ITK order (x, y, z), mm
    origin: tuple[float, float, float]  # LPS mm, centre of voxel (0, 0, 0)
    direction: tuple[float, ...]  # 9 numbers, row-major, ITK's

    @classmethod
    def covering(cls, image: sitk.Image, shape, region=None) -> ModelGrid:
        """The grid with ``shape`` voxels whose outer box is exactly the image's outer box, or that of its
        ``region``: ITK index bounds ``(lower, upper)``, upper exclusive (``rso.core.body.body_frame``).

        Its axes are the image's own, reordered and flipped to lie nearest L, P and S (``nearest_lps_axes``):
        the network was trained on axial volumes stored that way, and sees a chest stored in another voxel
        order (RAS, a sagittal stack) turned or mirrored otherwise (docs/decisions.md, "The network sees
        every image as an axial LPS volume"). An image stored as LPS keeps its grid exactly.
        """
        shape = check_grid_shape(shape)
        order, signs = nearest_lps_axes(image.GetDirection())
        axes = np.array(image.GetDirection()).reshape(3, 3)[:, order]  # columns: nearest L, P, S
        direction = axes * signs
        lower, upper = region or ((0, 0, 0), image.GetSize())
        extent = np.array(upper, float) - np.array(lower, float)
        size, image_spacing = (np.array(values, float)[order] for values in (extent, image.GetSpacing()))
        spacing_xyz = image_spacing * size / np.array(shape[::-1], float)
        # Voxel centres move by half the change of spacing so that the outer edges coincide; a flipped axis
        # starts at the image's last voxel.
        half_change = (spacing_xyz - image_spacing) / 2
        start = np.where(signs > 0, half_change, (size - 1) * image_spacing - half_change)
        shift = axes @ start
        origin = np.array(image.TransformIndexToPhysicalPoint([int(v) for v in lower])) + shift
        return cls(
            tuple(shape),
            tuple(spacing_xyz.tolist()),
            tuple(origin.tolist()),
            tuple(direction.ravel().tolist()),
        )

    @classmethod
    def of_image(cls, image: sitk.Image) -> ModelGrid:
        """An image's own voxel grid (any size; not a network input grid)."""
        return cls(
            tuple(int(n) for n in image.GetSize()[::-1]),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
        )

    @classmethod
    def from_dict(cls, data: dict) -> ModelGrid:
        return cls(*(tuple(data[key]) for key in ("shape", "spacing", "origin", "direction")))

    def to_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}

    @property
    def index_to_lps(self) -> np.ndarray:
        """3x3 matrix taking an (x, y, z) index step to an LPS step."""
        return np.array(self.direction).reshape(3, 3) @ np.diag(self.spacing)

    def reference_image(self) -> sitk.Image:
        image = sitk.Image([int(n) for n in self.shape[::-1]], sitk.sitkFloat32)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def resample(self, image: sitk.Image, default: float = AIR_HU) -> np.ndarray:
        """An image's values on this grid (no transform: both live in the same physical space)."""
        resampled = sitk.Resample(
            image, self.reference_image(), sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32
        )
        return sitk.GetArrayFromImage(resampled)

    def resample_field(self, field: sitk.Image) -> np.ndarray:
        """An LPS-mm displacement field image's vectors on this grid, as (z, y, x, 3)."""
        resampled = _resample_vectors(field, self.reference_image())
        return sitk.GetArrayFromImage(resampled).astype(np.float32)

    def voxels_to_mm(self, field_voxels: np.ndarray) -> np.ndarray:
        """(3, z, y, x) model-grid voxel displacement (dz, dy, dx) -> (z, y, x, 3) LPS mm."""
        steps_xyz = np.moveaxis(np.asarray(field_voxels, np.float64)[::-1], 0, -1)
        return (steps_xyz @ self.index_to_lps.T).astype(np.float32)

    def mm_to_voxels(self, field_mm: np.ndarray) -> np.ndarray:
        """(z, y, x, 3) LPS mm -> (3, z, y, x) model-grid voxels (dz, dy, dx)."""
        steps_xyz = np.asarray(field_mm, np.float64) @ np.linalg.inv(self.index_to_lps).T
        return np.moveaxis(steps_xyz, -1, 0)[::-1].astype(np.float32)

    def field_image(self, field_mm: np.ndarray) -> sitk.Image:
        """(z, y, x, 3) LPS mm on this grid -> an ITK displacement field image."""
        image = sitk.GetImageFromArray(np.asarray(field_mm, np.float64), isVector=True)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def lps_to_index(self, points_lps) -> np.ndarray:
        """LPS points (..., 3) -> continuous (z, y, x) indices on this grid."""
        offsets = np.asarray(points_lps, float) - np.array(self.origin)
        index_xyz = offsets @ np.linalg.inv(self.index_to_lps).T
        return index_xyz[..., ::-1]

    def index_to_lps_points(self, index_zyx) -> np.ndarray:
        index_xyz = np.asarray(index_zyx, float)[..., ::-1]
        return index_xyz @ self.index_to_lps.T + np.array(self.origin)

    def voxel_size_mm(self) -> np.ndarray:
        """Spacing in array order (z, y, x)."""
        return np.array(self.spacing[::-1])


def nearest_lps_axes(direction) -> tuple[list[int], np.ndarray]:
    """For an image's ``direction`` (9 numbers, ITK's row-major: column a is index axis a's LPS direction),
    the index axes that lie nearest L, P and S, in that order, and the signs (+1 or -1, shape (3,)) that
    make each point that way: the permutation with the largest sum of |cosines|. An axial LPS volume:
    [0, 1, 2] and +1s; stored RAS: [0, 1, 2] with L and P flipped; a sagittal stack (ITK's 'PSL'):
    [2, 0, 1]."""
    matrix = np.asarray(direction, float).reshape(3, 3)
    order = max(itertools.permutations(range(3)), key=lambda o: sum(abs(matrix[p, o[p]]) for p in range(3)))
    cosines = matrix[range(3), order]
    return list(order), np.where(cosines < 0, -1.0, 1.0)


def check_grid_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or any(n < GRID_MULTIPLE or n % GRID_MULTIPLE for n in shape):
        raise InputError(
            f"model grid {shape} must be three sizes (z, y, x), each a multiple of {GRID_MULTIPLE}"
        )
    return shape


def _resample_vectors(field: sitk.Image, reference: sitk.Image, pixel=sitk.sitkVectorFloat64) -> sitk.Image:
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(sitk.sitkLinear)
    # Beyond the field's outermost voxel centres keep the edge value, not zero displacement.
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampler.SetOutputPixelType(pixel)
    # ITK interpolates either float type in double: casting a float32 field first would only add a whole
    # float64 copy (1.2 GB for a truth at 1 mm).
    floating = field.GetPixelID() in (sitk.sitkVectorFloat32, sitk.sitkVectorFloat64)
    return resampler.Execute(field if floating else sitk.Cast(field, sitk.sitkVectorFloat64))


def upsample_field(field: sitk.Image, reference: sitk.Image, pixel=sitk.sitkVectorFloat64) -> sitk.Image:
    """A displacement field resampled (per component, linearly) onto another image's grid; ``pixel``:
    sitkVectorFloat32 halves a whole-volume field's memory (12 bytes a voxel) where float32 is enough."""
    return _resample_vectors(field, reference, pixel)


def physical_corners(image: sitk.Image) -> np.ndarray:
    """(8, 3) LPS points: the corners of the image's outer box (voxel edges, not centres)."""
    size = np.array(image.GetSize(), float)
    corners = [np.array(c) * size - 0.5 for c in itertools.product((0, 1), repeat=3)]
    return np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounds of the image's outer box (voxel edges, not centres)."""
    points = physical_corners(image)
    return points.min(axis=0), points.max(axis=0)


def overlap_fraction(fixed: sitk.Image, moving: sitk.Image) -> float:
    """Fraction of the fixed image's bounding box that the moving image's bounding box covers."""
    fixed_lo, fixed_hi = physical_bounds(fixed)
    moving_lo, moving_hi = physical_bounds(moving)
    common = np.clip(np.minimum(fixed_hi, moving_hi) - np.maximum(fixed_lo, moving_lo), 0, None)
    return float(np.prod(common) / np.prod(fixed_hi - fixed_lo))
