"""Parallel-beam projection of axial slices (scikit-image's radon and iradon): the fast projector.

Each axial slice is projected along a set of parallel directions and reconstructed by filtered
back-projection. It models no cone, so it is kept as the simulator's fast preset (``parallel``, for
unit tests) and for projection geometries whose source-detector distance is 0 (RTK's parallel beam):
the directions are then the geometry's gantry angles. Clinical cone-beam geometries go through RTK
(``rso.core.projection.conebeam``).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rso.core.projection.units import MU_WATER_PER_MM

FILTER = "shepp-logan"  # FBP ramp filter window (scikit-image's names)


def fbp_slices(
    attenuation: np.ndarray, directions_deg, sinogram_hook=None, filter_name: str = FILTER
) -> np.ndarray:
    """Project every axial slice along ``directions_deg`` and reconstruct it by filtered back-projection.

    Args:
        attenuation: (Z, Y, X) attenuation per pixel (mu times the pixel size), >= 0.
        directions_deg: parallel-beam projection directions in degrees.
        sinogram_hook: optional ``f(sinogram) -> sinogram`` applied between projection and
            reconstruction (the simulator adds scatter and noise there).
        filter_name: the FBP ramp filter's window (scikit-image's names).

    Returns:
        (Z, Y, X) the reconstructed attenuation per pixel, on the same grid.
    """
    from skimage.transform import iradon, radon  # scikit-image is not part of Slicer's Python

    angles = np.asarray(directions_deg, dtype=float)
    side = _square_side(attenuation)
    out = np.empty(attenuation.shape, np.float32)
    for k, plane in enumerate(attenuation):
        sinogram = radon(_pad_square(plane, side), theta=angles, circle=True)
        if sinogram_hook is not None:
            sinogram = sinogram_hook(sinogram)
        square = iradon(sinogram, theta=angles, output_size=side, circle=True, filter_name=filter_name)
        out[k] = _crop_center(square, plane.shape)
    return out


def hu_to_attenuation(hu: np.ndarray, pixel_mm: float, clip_below_air: bool = True) -> np.ndarray:
    """(Z, Y, X) HU -> attenuation per pixel (below air: 0, unless ``clip_below_air`` is off)."""
    attenuation = (hu + 1000.0) / 1000.0 * MU_WATER_PER_MM * pixel_mm
    return np.clip(attenuation, 0.0, None) if clip_below_air else attenuation


def attenuation_to_hu(attenuation: np.ndarray, pixel_mm: float) -> np.ndarray:
    return attenuation / (MU_WATER_PER_MM * pixel_mm) * 1000.0 - 1000.0


def reproject_parallel(image: sitk.Image, directions_deg, clip_below_air: bool = True) -> sitk.Image:
    """The image projected along parallel-beam ``directions_deg`` and reconstructed again (float32 HU,
    the image's grid).

    The streaks that dip below air are clipped by default, as no object attenuates less than air: on the
    training anatomies the clipped reprojection let a translation search recover the true offset of
    clinical-preset boxes better than a linear one (``clip_below_air=False``; bench/README.md).
    """
    pixel_mm = image.GetSpacing()[0]
    attenuation = hu_to_attenuation(
        sitk.GetArrayFromImage(image).astype(np.float32), pixel_mm, clip_below_air
    )
    reconstructed = fbp_slices(attenuation, directions_deg)
    out = sitk.GetImageFromArray(attenuation_to_hu(reconstructed, pixel_mm).astype(np.float32))
    out.CopyInformation(image)
    return out


def _square_side(attenuation: np.ndarray) -> int:
    """Side of the centred square whose inscribed circle holds every attenuating pixel of every slice.

    radon and iradon then work on that circle only (circle=True), about half the pixels of the
    square around the slice's diagonal that circle=False would pad to.
    """
    rows, cols = attenuation.shape[1:]
    z, y, x = np.nonzero(attenuation > 0)
    if y.size == 0:
        return max(rows, cols)
    radius = np.sqrt((y - (rows - 1) / 2) ** 2 + (x - (cols - 1) / 2) ** 2).max()
    return max(rows, cols, 2 * int(np.ceil(radius)) + 3)


def _pad_square(plane: np.ndarray, side: int) -> np.ndarray:
    """Pad with air (zero attenuation) to a centred square of the given side."""
    before = [(side - n) // 2 for n in plane.shape]
    return np.pad(plane, [(b, side - n - b) for b, n in zip(before, plane.shape)])


def _crop_center(square: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    before = [(square.shape[i] - shape[i]) // 2 for i in range(2)]
    return square[before[0] : before[0] + shape[0], before[1] : before[1] + shape[1]]
