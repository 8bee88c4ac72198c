"""Artefact matching for phase-binned CBCT: both images seen through both phases' projection views.

Each phase of a 4D CBCT is reconstructed from its own sparse subset of views, so each carries view-
aliasing streaks. The subsets of two phases are the same views rotated by a fraction of a degree to
a few degrees, and so are their streaks: far from a bright source (ribs, the body's edge) a rotated
streak looks like motion of several millimetres. Inside a box of lung the two phases' images then
agree *better* at a wrong alignment than at the true one, for MIND, LNCC and MSE alike
(bench/README.md, "Streaks that look like motion"; scripts/streak_study.py).

Filtered back-projection from a set of views is (nearly) a linear, shift-invariant blur of the
slice by that set's point-spread function. Projecting the fixed image again through the moving
image's views and the moving image through the fixed image's gives both the same point-spread
function (the two sets' combined one): their streaks then follow the anatomy that casts them,
and a similarity compares anatomy again. This is the idea of a patient-specific artefact model
(Brehm et al., "Artifact-resistant motion estimation with a patient-specific artifact model for
motion-compensated cone-beam CT", Med Phys 40:101913, 2013), made symmetric so that it needs no
streak-free prior image.

Geometry: parallel-beam projections of each axial slice (scikit-image's radon and iradon), the
simulator's geometry (rso.simulation.cbct, docs/simulator.md). A clinical cone-beam scan would need
its own projector; the views file says which geometry its directions are for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.errors import InputError

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at about 70 keV
GEOMETRY = "parallel-axial"  # parallel-beam projections of each axial slice
FILTER = "shepp-logan"  # FBP ramp filter window (scikit-image's names)


@dataclass(frozen=True)
class Views:
    """The projection directions one phase image was reconstructed from, in degrees (parallel beam)."""

    directions_deg: tuple[float, ...]
    geometry: str = GEOMETRY

    def __post_init__(self):
        if self.geometry != GEOMETRY:
            raise InputError(f"views: only the {GEOMETRY!r} geometry is supported, not {self.geometry!r}")
        if len(self.directions_deg) < 2 or not np.all(np.isfinite(self.directions_deg)):
            raise InputError("views: at least two finite projection directions (degrees) are needed")

    def to_dict(self) -> dict:
        return {"geometry": self.geometry, "directions_deg": [float(d) for d in self.directions_deg]}

    @classmethod
    def from_dict(cls, data: dict) -> Views:
        try:
            return cls(tuple(float(d) for d in data["directions_deg"]), data.get("geometry", GEOMETRY))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"views: expected {{'geometry': ..., 'directions_deg': [...]}} ({error})"
            ) from None


def read_views(path: str | Path) -> Views:
    """A views file: JSON ``{"geometry": "parallel-axial", "directions_deg": [0.0, 7.2, ...]}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the views file {path}: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"views file {path}: expected a JSON object")
    return Views.from_dict(data)


def views_pair(fixed_views: Views | None, moving_views: Views | None) -> tuple[Views, Views] | None:
    """Both images' views, or None: matching needs the two."""
    if (fixed_views is None) != (moving_views is None):
        raise InputError("views: give the projection views of both images, or of neither")
    return (fixed_views, moving_views) if fixed_views is not None else None


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


def reproject(image: sitk.Image, views: Views, clip_below_air: bool = True) -> sitk.Image:
    """The image projected along ``views`` and reconstructed again (float32 HU, the image's grid).

    The streaks that dip below air are clipped by default, as no object attenuates less than air: on the
    training anatomies the clipped reprojection let a translation search recover the true offset of
    clinical-preset boxes better than a linear one (``clip_below_air=False``; bench/README.md).
    """
    pixel_mm = image.GetSpacing()[0]
    attenuation = hu_to_attenuation(
        sitk.GetArrayFromImage(image).astype(np.float32), pixel_mm, clip_below_air
    )
    reconstructed = fbp_slices(attenuation, views.directions_deg)
    out = sitk.GetImageFromArray(attenuation_to_hu(reconstructed, pixel_mm).astype(np.float32))
    out.CopyInformation(image)
    return out


def match_artefacts(
    fixed: sitk.Image, moving: sitk.Image, fixed_views: Views, moving_views: Views
) -> tuple[sitk.Image, sitk.Image]:
    """The fixed image seen through the moving image's views, and the moving image through the fixed's.

    Both then carry the point-spread function of both view sets: what a similarity compares between
    them is anatomy, not the rotation between the two phases' streaks.
    """
    return reproject(fixed, moving_views), reproject(moving, fixed_views)


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
