"""A small synthetic chest pair with known motion: for self-tests, tutorials and screenshots offline.

Body at soft-tissue HU, two lungs at -850 HU, a spine and a nodule. The moving image is the
phantom; the fixed image is the phantom seen through a breathing-like field u (superior-inferior,
growing toward the diaphragm, plus a bump at the nodule), so fixed(p) = moving(p + u(p)) and u is
exactly the fixed -> moving truth. Both are evaluated analytically: no resampling blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import lps_to_ras

NODULE_LPS = np.array([38.0, -5.0, -12.0])  # mm, in the left lung near the diaphragm


@dataclass(frozen=True)
class PhantomPair:
    fixed: sitk.Image
    moving: sitk.Image
    truth: sitk.Image  # LPS mm, fixed -> moving

    def region_ras(self, half_size_mm: float = 16.0) -> list[float]:
        """[R1, A1, S1, R2, A2, S2]: a box around the nodule, where the motion is largest."""
        centre = lps_to_ras(NODULE_LPS)
        return [float(v) for v in (*(centre - half_size_mm), *(centre + half_size_mm))]


def _phantom(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """HU at LPS points (mm)."""
    hu = np.full(x.shape, -1000.0)
    body = (x / 86.0) ** 2 + (y / 62.0) ** 2 <= 1.0
    hu[body] = 30.0 + 15.0 * np.sin(x[body] / 7.0) * np.cos(y[body] / 9.0) * np.sin(z[body] / 11.0 + 0.5)
    for side in (-1.0, 1.0):
        lung = ((x - side * 40.0) / 30.0) ** 2 + ((y + 4.0) / 40.0) ** 2 + ((z - 12.0) / 46.0) ** 2 <= 1.0
        hu[lung] = -850.0 + 25.0 * np.cos(x[lung] / 5.0 + z[lung] / 6.0)
    spine = (x / 13.0) ** 2 + ((y - 46.0) / 13.0) ** 2 <= 1.0
    hu[spine] = 450.0
    nodule = np.sum([(c - n) ** 2 for c, n in zip((x, y, z), NODULE_LPS)], axis=0) <= 9.0 ** 2
    hu[nodule] = 40.0
    return hu


def _motion(x: np.ndarray, y: np.ndarray, z: np.ndarray, amplitude_mm: float) -> np.ndarray:
    """(..., 3) LPS mm: SI motion growing inferiorly under the lungs, some AP, a bump at the nodule."""
    lungs = np.exp(-((np.abs(x) - 40.0) ** 2) / (2 * 30.0**2)) * np.exp(-((y + 4.0) ** 2) / (2 * 45.0**2))
    inferior = 0.5 * (1.0 - np.tanh(z / 40.0))
    bump = np.exp(-np.sum([(c - n) ** 2 for c, n in zip((x, y, z), NODULE_LPS)], axis=0) / (2 * 12.0**2))
    u = np.zeros(x.shape + (3,))
    u[..., 2] = amplitude_mm * (lungs * inferior + 0.6 * bump)
    u[..., 1] = -0.25 * amplitude_mm * lungs * inferior
    u[..., 0] = 0.3 * amplitude_mm * bump
    return u


def phantom_pair(shape=(32, 64, 64), spacing_mm: float = 3.0, amplitude_mm: float = 9.0) -> PhantomPair:
    """The fixed/moving/truth images on a (z, y, x) grid of ``spacing_mm`` voxels centred at 0."""
    reference = sitk.Image([int(n) for n in shape[::-1]], sitk.sitkFloat32)
    reference.SetSpacing([spacing_mm] * 3)
    reference.SetOrigin((-(np.array(shape[::-1]) - 1) * spacing_mm / 2).tolist())
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * spacing_mm for n in shape], indexing="ij")
    u = _motion(x, y, z, amplitude_mm)
    images = []
    for array in (_phantom(x + u[..., 0], y + u[..., 1], z + u[..., 2]), _phantom(x, y, z)):
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.CopyInformation(reference)
        images.append(image)
    truth = sitk.GetImageFromArray(u, isVector=True)
    truth.CopyInformation(reference)
    return PhantomPair(images[0], images[1], truth)
