"""Quality maps of a displacement field, as images on its grid, and their summaries.

A clinician checks a deformable registration (AAPM TG-132) where it folds, where it stretches or
compresses tissue implausibly, and what the last step changed:

* ``jacobian_map``: det J of x -> x + u(x) per voxel (1: volume kept, < 1 compressed, > 1 stretched);
* ``folding_map``: 1 where det J <= 0 (the mapping folds: tissue would pass through itself);
* ``change_map``: |u_after - u_before| in mm, the place a step touched.

The determinant is ``rso.core.metrics.jacobian_determinant`` (one definition), computed in slabs
so that a full-resolution CT field needs a few hundred MB, not gigabytes.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rso.core.boxes import box_from_lps
from rso.core.geometry import ModelGrid
from rso.core.metrics import jacobian_determinant

# Voxels per slab of det J: its float64 gradients, products and determinant take ~400 bytes a voxel.
JACOBIAN_SLAB_VOXELS = 500_000


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(reference.GetSpacing())
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    return image


def jacobian_map(field: sitk.Image) -> sitk.Image:
    """det J of x -> x + u(x) (central differences, physical space) as a float32 image on the field's grid.

    Args:
        field: ITK displacement field (3 components, LPS mm).
    """
    vectors = sitk.GetArrayViewFromImage(field)  # (z, y, x, 3)
    index_to_lps = ModelGrid.of_image(field).index_to_lps
    depth = vectors.shape[0]
    rows = max(1, JACOBIAN_SLAB_VOXELS // max(1, vectors.shape[1] * vectors.shape[2]))
    det = np.empty(vectors.shape[:3], np.float32)
    for start in range(0, depth, rows):
        stop = min(start + rows, depth)
        # One slice of halo each side: central differences inside a slab equal those of the whole.
        lo, hi = max(start - 1, 0), min(stop + 1, depth)
        det[start:stop] = jacobian_determinant(vectors[lo:hi], index_to_lps)[start - lo : stop - lo]
    return _image_like(det, field)


def folding_map(jacobian: sitk.Image) -> sitk.Image:
    """1 (uint8) where det J <= 0, else 0."""
    return sitk.Cast(sitk.LessEqual(jacobian, 0.0), sitk.sitkUInt8)


def change_map(change_field: sitk.Image) -> sitk.Image:
    """|v| per voxel (float32, mm) of a field of changes v = u_after - u_before (LPS mm)."""
    vectors = sitk.GetArrayViewFromImage(change_field)
    squared = np.zeros(vectors.shape[:3], np.float32)
    for component in range(3):  # one component at a time: no (z, y, x, 3) float64 temporary
        squared += vectors[..., component].astype(np.float32) ** 2
    return _image_like(np.sqrt(squared), change_field)


def jacobian_summary(jacobian: sitk.Image, region: tuple[slice, ...] | None = None) -> dict:
    """det J statistics and folding, over the whole image or a (z, y, x) region of it."""
    det = sitk.GetArrayViewFromImage(jacobian)
    det = det[region] if region is not None else det
    folded = int((det <= 0).sum())
    voxel_ml = float(np.prod(jacobian.GetSpacing())) / 1000.0
    return {
        "jacobian_min": float(det.min()),
        "jacobian_max": float(det.max()),
        "jacobian_p1": float(np.percentile(det, 1)),
        "jacobian_p99": float(np.percentile(det, 99)),
        "folding_voxels": folded,
        "folding_fraction": folded / det.size,
        "folding_ml": folded * voxel_ml,
    }


def box_summaries(history, jacobian: sitk.Image, change: sitk.Image | None = None) -> list[dict]:
    """Per RSO box: what the step measured (existing metrics) and the final field's quality inside it.

    Args:
        history: the session's step records (only those with a box count).
        jacobian: the final field's det J on the fixed image's grid.
        change: the last step's |field change| (mm) on the same grid, if known: how much the last
            step moved each box (0 in boxes it did not touch, with local composition).
    """
    grid = ModelGrid.of_image(jacobian)
    summaries = []
    for number, record in enumerate(history, start=1):
        if record.box is None:
            continue
        region = box_from_lps(grid, record.box.lps_min, record.box.lps_max).voxels.slices
        metrics = record.metrics
        summary = {
            "step": number,
            "box_ras": record.box.ras_corners,
            "rmse_hu_box": metrics.get("rmse_hu_box"),
            "tre_mm_box": (metrics.get("tre_mm_box") or {}).get("mean"),
            "outside_change_mm": metrics.get("outside_change_mm"),
            **jacobian_summary(jacobian, region),
        }
        if change is not None:
            summary["last_step_change_mm_max"] = float(sitk.GetArrayViewFromImage(change)[region].max())
        summaries.append(summary)
    return summaries
