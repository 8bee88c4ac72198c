"""Body and lung masks from a chest CT in HU, with SimpleITK thresholds and morphology.

The simulator needs them to place the breathing motion (lungs and what lies below them move,
the chest wall slides) and to score results inside the body. They are rough on purpose:
a few millimetres of error at a boundary do not matter for either use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rso.core.body import BODY_HU, OPENING_MM
from rso.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskParams:
    body_threshold_hu: float = BODY_HU  # skin/air boundary lies between fat (-100) and air (-1000)
    lung_upper_hu: float = -400.0  # aerated lung is about -900..-500; vessels are excluded, then closed in
    closing_radius_mm: float = 6.0  # closes vessels and airway walls into the lung mask
    min_lung_fraction: float = 0.02  # lungs must fill at least this fraction of the body volume


def check_ct(image: sitk.Image, what: str = "CT") -> None:
    """Raise InputError unless image is a 3-D scalar volume whose values look like HU."""
    if image.GetDimension() != 3:
        raise InputError(f"{what} is {image.GetDimension()}-D; a 3-D CT volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        components = image.GetNumberOfComponentsPerPixel()
        raise InputError(f"{what} has {components} components per voxel; a scalar CT is required")
    if min(image.GetSize()) < 4:
        raise InputError(f"{what} has size {image.GetSize()}; at least 4 voxels along each axis are required")
    values = sitk.GetArrayViewFromImage(image)
    low, high = np.percentile(values, [1, 99.9])
    # A chest CT in HU holds air (about -1000) and soft tissue or bone (> 0).
    if low > -800 or high < 0 or high > 10000:
        raise InputError(
            f"{what} does not look like a CT in HU (1st/99.9th percentiles {low:.4g}/{high:.4g}; "
            "expected air near -1000 and tissue above 0)"
        )


def body_mask(ct: sitk.Image, params: MaskParams = MaskParams()) -> sitk.Image:
    """The patient's body (uint8 0/1): the largest non-air object, holes filled slice by slice.

    The largest component drops the table and blankets. Filling per axial slice closes the lungs
    and airways into the body; where the field of view cuts the body, the cut edge counts as
    body, so that lungs cut by the border of a cropped volume are filled in too.
    """
    check_ct(ct)
    tissue = sitk.BinaryThreshold(ct, params.body_threshold_hu, 1e9, 1, 0)
    tissue = sitk.BinaryMorphologicalOpening(tissue, _radius(ct, OPENING_MM))  # detaches table, thin sheets
    body = _largest_components(tissue, count=1)
    array = sitk.GetArrayFromImage(body).astype(bool)
    if not array.any():
        raise InputError("no body found in the CT (nothing above -500 HU)")
    filled = np.stack([_fill_slice(plane) for plane in array])
    return _like(filled, ct)


def _fill_slice(plane: np.ndarray, min_touch: int = 3) -> np.ndarray:
    """Fill holes in one axial slice, closing the body along the image edges that cut through it."""
    padded = np.pad(plane, 1)
    if plane[0].sum() >= min_touch:
        padded[0] = True
    if plane[-1].sum() >= min_touch:
        padded[-1] = True
    if plane[:, 0].sum() >= min_touch:
        padded[:, 0] = True
    if plane[:, -1].sum() >= min_touch:
        padded[:, -1] = True
    return ndimage.binary_fill_holes(padded)[1:-1, 1:-1] | plane


def lung_mask(
    ct: sitk.Image, body: sitk.Image | None = None, params: MaskParams = MaskParams()
) -> sitk.Image:
    """Both lungs (uint8 0/1): air inside the body, the largest one or two components, vessels closed in."""
    body = body_mask(ct, params) if body is None else body
    air = sitk.BinaryThreshold(ct, -1e9, params.lung_upper_hu, 1, 0)
    inner = sitk.BinaryErode(body, _radius(ct, 3.0))  # keeps the skin-air boundary out of the lungs
    air = sitk.And(air, inner)
    air = sitk.BinaryMorphologicalOpening(air, _radius(ct, 2.0))  # drops noise and thin airways
    lungs = _largest_components(air, count=2, min_fraction=0.2)
    lungs = sitk.BinaryMorphologicalClosing(lungs, _radius(ct, params.closing_radius_mm))
    lungs = sitk.And(
        sitk.BinaryFillhole(lungs), body
    )  # 3-D, so the mediastinum between the bronchi stays out
    body_voxels = int(sitk.GetArrayViewFromImage(body).sum())
    lung_voxels = int(sitk.GetArrayViewFromImage(lungs).sum())
    if lung_voxels < params.min_lung_fraction * body_voxels:
        raise InputError(
            f"no lungs found in the CT (air inside the body is {100 * lung_voxels / body_voxels:.1f} % "
            f"of the body, at least {100 * params.min_lung_fraction:.0f} % expected for a chest CT)"
        )
    return lungs


def _largest_components(mask: sitk.Image, count: int, min_fraction: float = 0.0) -> sitk.Image:
    """Keep the `count` largest components, and of those only ones at least min_fraction of the largest."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    sizes = sitk.GetArrayViewFromImage(labels)
    stats = np.bincount(sizes.ravel())[1:]
    keep = [i + 1 for i in range(min(count, len(stats))) if stats[i] >= min_fraction * stats[0]]
    if not keep:
        return sitk.Cast(mask * 0, sitk.sitkUInt8)
    return sitk.Cast(sitk.BinaryThreshold(labels, 1, max(keep), 1, 0), sitk.sitkUInt8)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def _radius(image: sitk.Image, mm: float) -> list[int]:
    """A structuring-element radius in voxels per axis for a physical radius, at least 1 voxel."""
    return [max(1, int(round(mm / s))) for s in image.GetSpacing()]
