"""Pairs with a known motion: the one place such pairs are built (self-tests, tutorials, screenshots, tests).

``phantom_pair`` is an analytic chest phantom that needs no data; ``pair_from_field`` turns any image
(a real CT in the tests) and field (``breathing_like_field``) into a pair whose truth is exact.

Body at soft-tissue HU, two lungs at -850 HU, a spine and a nodule. The moving image is the
phantom; the fixed image is the phantom seen through a breathing-like field u (superior-inferior,
growing toward the diaphragm, plus a bump at the nodule), so fixed(p) = moving(p + u(p)) and u is
exactly the fixed -> moving truth. Both are evaluated analytically: no resampling blur. So are the
structures as label maps (``LABELS``) on both images: the truth for carried contours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import lps_to_ras

NODULE_LPS = np.array([38.0, -5.0, -12.0])  # mm, in the left lung near the diaphragm
NODULE_RADIUS_MM = 9.0
# The phantom's structures as labels: value -> (name, RGB 0..1).
LABELS = {
    1: ("right lung", (0.55, 0.75, 0.95)),
    2: ("left lung", (0.35, 0.55, 0.95)),
    3: ("nodule", (0.95, 0.55, 0.10)),
    4: ("spine", (0.95, 0.95, 0.75)),
}


@dataclass(frozen=True)
class PhantomPair:
    fixed: sitk.Image
    moving: sitk.Image
    truth: sitk.Image  # LPS mm, fixed -> moving
    moving_labels: sitk.Image | None = None  # LABELS drawn on the moving image
    fixed_labels: sitk.Image | None = None  # the same structures where the truth puts them on the fixed image

    def region_ras(self, half_size_mm: float = 16.0) -> list[float]:
        """[R1, A1, S1, R2, A2, S2]: a box around the nodule, where the motion is largest."""
        centre = lps_to_ras(NODULE_LPS)
        return [float(v) for v in (*(centre - half_size_mm), *(centre + half_size_mm))]


def _structures(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """Where each structure is, at LPS points (mm); the nodule lies inside the left lung."""
    lung = [
        ((x - side * 40.0) / 30.0) ** 2 + ((y + 4.0) / 40.0) ** 2 + ((z - 12.0) / 46.0) ** 2 <= 1.0
        for side in (-1.0, 1.0)
    ]  # LPS x grows to the patient's left
    return {
        "body": (x / 86.0) ** 2 + (y / 62.0) ** 2 <= 1.0,
        "right lung": lung[0],
        "left lung": lung[1],
        "spine": (x / 13.0) ** 2 + ((y - 46.0) / 13.0) ** 2 <= 1.0,
        "nodule": np.sum([(c - n) ** 2 for c, n in zip((x, y, z), NODULE_LPS)], axis=0)
        <= NODULE_RADIUS_MM**2,
    }


def _phantom(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """HU at LPS points (mm)."""
    where = _structures(x, y, z)
    hu = np.full(x.shape, -1000.0)
    body = where["body"]
    hu[body] = 30.0 + 15.0 * np.sin(x[body] / 7.0) * np.cos(y[body] / 9.0) * np.sin(z[body] / 11.0 + 0.5)
    for lung in (where["right lung"], where["left lung"]):
        hu[lung] = -850.0 + 25.0 * np.cos(x[lung] / 5.0 + z[lung] / 6.0)
    hu[where["spine"]] = 450.0
    hu[where["nodule"]] = 40.0
    return hu


def _labels(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """LABELS' values at LPS points (mm), 0 elsewhere (uint8)."""
    where = _structures(x, y, z)
    labels = np.zeros(x.shape, np.uint8)
    for value, (name, _) in LABELS.items():  # in order: the nodule is cut out of the left lung
        labels[where[name]] = value
    return labels


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
    moved = (x + u[..., 0], y + u[..., 1], z + u[..., 2])
    images = []
    for array in (
        _phantom(*moved).astype(np.float32),
        _phantom(x, y, z).astype(np.float32),
        _labels(x, y, z),
        _labels(*moved),
    ):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        images.append(image)
    truth = sitk.GetImageFromArray(u, isVector=True)
    truth.CopyInformation(reference)
    fixed, moving, moving_labels, fixed_labels = images
    return PhantomPair(fixed, moving, truth, moving_labels, fixed_labels)


def breathing_like_field(image: sitk.Image, amplitude_mm: float, bump_mm: float, bump_centre) -> sitk.Image:
    """A smooth field (LPS mm) on an image's grid: SI motion growing inferiorly plus one local bump.

    ``bump_centre`` is (z, y, x) in [-1, 1] of the image's extent. The bump is what a clinician's box
    would target: a region a whole-image fit leaves wrong.
    """
    size = image.GetSize()
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in size[::-1]], indexing="ij")
    field = np.zeros((*size[::-1], 3))
    field[..., 2] = amplitude_mm * 0.5 * (1 - z) * np.exp(-(x**2 + y**2) / 0.8)  # SI, largest inferiorly
    field[..., 1] = 0.3 * amplitude_mm * np.exp(-(x**2 + (y + 0.3) ** 2 + z**2) / 0.6)  # AP
    cz, cy, cx = bump_centre
    bump = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / 0.05)
    field[..., 0] += bump_mm * bump
    field[..., 2] += 0.5 * bump_mm * bump
    result = sitk.GetImageFromArray(field, isVector=True)
    result.CopyInformation(image)
    return result


def pair_from_field(moving: sitk.Image, truth: sitk.Image) -> PhantomPair:
    """A pair with a known truth from any image and field: fixed(x) = moving(x + truth(x)).

    Pulling the moving image through the field makes the field the exact fixed -> moving truth,
    with no inversion (the phantom itself is made the same way, analytically).
    """
    fixed = sitk.Resample(
        moving, moving, sitk.DisplacementFieldTransform(sitk.Image(truth)), sitk.sitkLinear, -1000.0
    )
    return PhantomPair(fixed, moving, truth)
