"""An inserted lung lesion (tumour or nodule) that moves on a trajectory of its own.

A whole-image fit weighs a 2-3 cm lesion by its volume, a few hundredths of the lungs, so a
lesion that does not follow the surrounding breathing is where ISO leaves a real local error:
the case the clinician's box is for. Lung tumours often move with a different amplitude and phase
than the lung around them, and trace a loop (hysteresis) of a few millimetres between inhale and
exhale (Seppenwoolde et al., IJROBP 53:822, 2002: 1-5 mm loops; amplitudes up to 25 mm).

The lesion is painted into the end-exhale CT (soft tissue with a little texture) and its own
motion is a smooth bump of displacement centred on it, added to the breathing field:
``curve_si(t) * A_si * e_S + curve_loop(t) * A_loop * e_A`` times a Gaussian of the lesion's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rso.errors import InputError


@dataclass(frozen=True)
class LesionParams:
    diameter_mm: tuple[float, float] = (18.0, 30.0)  # drawn per case
    hu: float = 30.0  # soft tissue
    texture_hu: float = 20.0  # RMS of a smooth texture, so the lesion has structure to register
    own_si_mm: tuple[float, float] = (5.0, 9.0)  # SI excursion beyond the surrounding breathing, sign drawn
    loop_mm: tuple[float, float] = (2.0, 4.0)  # AP loop between inhale and exhale
    lag: float = 0.1  # the lesion's own SI motion lags the breathing by this fraction of a cycle
    reach_mm: float = 12.0  # the bump's Gaussian width beyond the lesion's radius
    min_depth_mm: float = 8.0  # the lesion lies at least this far inside the lungs


@dataclass(frozen=True)
class Lesion:
    """One drawn lesion: where, how big, and its own motion (mm)."""

    centre_lps: tuple[float, float, float]
    radius_mm: float
    own_si_mm: float
    loop_mm: float

    def to_dict(self) -> dict:
        return {
            "centre_lps": list(self.centre_lps),
            "radius_mm": self.radius_mm,
            "own_si_mm": self.own_si_mm,
            "loop_mm": self.loop_mm,
        }


def draw_lesion(ct: sitk.Image, lungs: np.ndarray, params: LesionParams, rng: np.random.Generator) -> Lesion:
    """A lesion in the lower half of the lungs (where breathing is largest), well inside them."""
    radius = 0.5 * float(rng.uniform(*params.diameter_mm))
    spacing = np.array(ct.GetSpacing()[::-1])  # (z, y, x)
    depth = ndimage.distance_transform_edt(lungs, sampling=spacing)
    candidates = np.argwhere(depth >= radius + params.min_depth_mm)
    if candidates.size == 0:
        candidates = np.argwhere(depth >= 0.5 * radius)  # small lungs: the deepest places there are
    if candidates.size == 0:
        raise InputError("the lungs are too thin to hold a simulated lesion")
    lower = candidates[candidates[:, 0] <= np.median(candidates[:, 0])]  # array z grows superiorly
    index = lower[rng.integers(len(lower))]
    centre = ct.TransformIndexToPhysicalPoint([int(v) for v in index[::-1]])
    sign = rng.choice((-1.0, 1.0))
    return Lesion(
        tuple(centre),
        radius,
        sign * float(rng.uniform(*params.own_si_mm)),
        float(rng.uniform(*params.loop_mm)),
    )


def distance_mm(ct: sitk.Image, lesion: Lesion) -> np.ndarray:
    """(z, y, x) distance of every voxel centre from the lesion's centre, mm (axis-aligned grid)."""
    axes = [o + s * np.arange(n) for o, s, n in zip(ct.GetOrigin(), ct.GetSpacing(), ct.GetSize())]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    cx, cy, cz = lesion.centre_lps
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)


def paint_lesion(
    ct: sitk.Image, lesion: Lesion, params: LesionParams, rng: np.random.Generator
) -> tuple[sitk.Image, sitk.Image]:
    """The CT with the lesion painted in (a soft edge over one voxel) and its label map (uint8 0/1)."""
    distance = distance_mm(ct, lesion)
    edge = min(ct.GetSpacing())
    inside = np.clip((lesion.radius_mm - distance) / edge + 0.5, 0.0, 1.0)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, distance.shape), 1.5)
    texture *= params.texture_hu / max(texture.std(), 1e-9)
    hu = sitk.GetArrayFromImage(ct).astype(np.float64)
    painted = (1.0 - inside) * hu + inside * (params.hu + texture)
    image = sitk.GetImageFromArray(painted.astype(np.float32))
    image.CopyInformation(ct)
    label = sitk.GetImageFromArray((distance <= lesion.radius_mm).astype(np.uint8))
    label.CopyInformation(ct)
    return image, label


def lesion_patterns(ct: sitk.Image, lesion: Lesion, params: LesionParams) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's own motion as two (z, y, x, 3) LPS-mm patterns: SI excursion and AP loop."""
    bump = np.exp(-0.5 * (distance_mm(ct, lesion) / (lesion.radius_mm + params.reach_mm)) ** 2)
    si, loop = np.zeros(bump.shape + (3,)), np.zeros(bump.shape + (3,))
    si[..., 2] = -lesion.own_si_mm * bump  # inhale is inferior (-S), as the breathing's
    loop[..., 1] = -lesion.loop_mm * bump  # anterior is -P
    return si, loop
