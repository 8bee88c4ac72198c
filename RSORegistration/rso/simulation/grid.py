"""The simulator's working grid: a chest CT resampled onto an axis-aligned LPS grid, cropped to the body.

rso.simulation.simulate makes every case on it; the motion model (rso.simulation.motion) needs
an identity direction.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rso.core.body import BODY_MARGIN_MM
from rso.simulation.anatomy import MaskParams, body_mask, check_ct

AIR_HU = -1000.0


def working_ct(
    ct: sitk.Image,
    spacing_mm: float | None = 2.5,
    crop_margin_mm: float | None = BODY_MARGIN_MM,
    masks: MaskParams = MaskParams(),
) -> sitk.Image:
    """The CT on an axis-aligned LPS grid (identity direction) at spacing_mm, cropped to the body.

    Downsampling is anti-aliased (Gaussian) and HU below -1000 (padding outside the scanner's field
    of view) becomes air.
    """
    check_ct(ct)
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    spacing = list(ct.GetSpacing()) if spacing_mm is None else [float(spacing_mm)] * 3
    lower, upper = _physical_bounds(ct)
    size = [max(2, int(np.floor((hi - lo) / sp + 1e-6)) + 1) for lo, hi, sp in zip(lower, upper, spacing)]
    if _is_identity(ct) and spacing_mm is None:
        grid = ct
    else:
        grid = sitk.Resample(
            _anti_alias(ct, spacing),
            size,
            sitk.Transform(),
            sitk.sitkLinear,
            lower,
            spacing,
            np.eye(3).ravel().tolist(),
            AIR_HU,
            sitk.sitkFloat32,
        )
    grid = sitk.Clamp(grid, sitk.sitkFloat32, AIR_HU, 1e6)
    if crop_margin_mm is not None:
        grid = _crop_to_body(grid, crop_margin_mm, masks)
    return grid


def _physical_bounds(image: sitk.Image) -> tuple[list[float], list[float]]:
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, image.GetSize())])
        for corner in np.ndindex(2, 2, 2)
    ]
    return list(np.min(corners, axis=0)), list(np.max(corners, axis=0))


def _anti_alias(image: sitk.Image, spacing: list[float]) -> sitk.Image:
    # Blur each source axis down to the new resolution (the coarsest new spacing: the grids may be rotated).
    target = max(spacing)
    sigma = [0.5 * np.sqrt(max(target**2 - s**2, 0.0)) for s in image.GetSpacing()]
    if max(sigma) < 1e-3:
        return image
    return sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma])


def _crop_to_body(ct: sitk.Image, margin_mm: float, masks: MaskParams) -> sitk.Image:
    body = sitk.GetArrayFromImage(body_mask(ct, masks))
    nonzero = np.nonzero(body)
    margin = [int(np.ceil(margin_mm / s)) for s in reversed(ct.GetSpacing())]  # array order (z, y, x)
    lower = [max(0, int(idx.min()) - m) for idx, m in zip(nonzero, margin)]
    upper = [min(n, int(idx.max()) + 1 + m) for idx, m, n in zip(nonzero, margin, body.shape)]
    return ct[lower[2] : upper[2], lower[1] : upper[1], lower[0] : upper[0]]


def _is_identity(image: sitk.Image) -> bool:
    return bool(np.allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6))
