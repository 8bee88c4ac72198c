"""Registration quality against ground truth: RMSE in HU, TRE in mm, Jacobian, locality.

MONAI has no TRE or Jacobian metric, so these are small and tested here. Fields are
(z, y, x, 3) LPS millimetres on a grid whose (x, y, z) index step is ``index_to_lps``.
"""

from __future__ import annotations

import numpy as np


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if mask is not None:
        diff = diff[mask]
    return float(np.sqrt(np.mean(diff**2))) if diff.size else None


def jacobian_determinant(field_mm: np.ndarray, index_to_lps: np.ndarray) -> np.ndarray:
    """det(I + du/dx) of x -> x + u(x), by central differences, in physical space: (z, y, x)."""
    import torch  # here, not at file scope: Slicer's process reads these metrics without torch

    # np.require copies only a read-only or non-float64 field (torch cannot wrap read-only memory).
    field = torch.from_numpy(np.require(field_mm, np.float64, ["W"]))
    return jacobian_determinant_torch(field, torch.from_numpy(np.linalg.inv(index_to_lps))).numpy()


def jacobian_determinant_torch(field_mm, lps_to_index):
    """The same for a (Z, Y, X, 3) LPS-mm tensor, differentiable; ``lps_to_index`` is inv(index_to_lps)."""
    import torch

    # du/d(index) along array axes (z, y, x) -> columns in index order (x, y, z) -> du/dx in mm/mm.
    gradients = torch.stack(torch.gradient(field_mm, dim=(0, 1, 2))[::-1], dim=-1)
    du_dx = gradients @ lps_to_index.to(field_mm.dtype)
    return torch.linalg.det(torch.eye(3, dtype=field_mm.dtype, device=field_mm.device) + du_dx)


def folding(field_mm: np.ndarray, index_to_lps: np.ndarray) -> dict:
    det = jacobian_determinant(field_mm, index_to_lps)
    return {"folding_fraction": float(np.mean(det <= 0)), "jacobian_min": float(det.min())}


def target_registration_error(
    field_mm: np.ndarray, truth_mm: np.ndarray, mask: np.ndarray | None = None
) -> dict:
    """Dense TRE: the distance between estimated and true fixed->moving positions at each voxel."""
    error = np.linalg.norm(field_mm.astype(np.float64) - truth_mm, axis=-1)
    if mask is not None:
        error = error[mask]
    return {
        "mean": float(error.mean()),
        "median": float(np.median(error)),
        "p95": float(np.percentile(error, 95)),
    }


def largest_change_outside(old_mm: np.ndarray, new_mm: np.ndarray, inside: np.ndarray) -> float:
    """The largest displacement change (mm) where ``inside`` is False: what a step did elsewhere."""
    change = np.linalg.norm(new_mm.astype(np.float64) - old_mm, axis=-1)[~inside]
    return float(change.max()) if change.size else 0.0


def measure(
    field_mm: np.ndarray,
    warped_hu: np.ndarray,
    reference_hu: np.ndarray,
    index_to_lps: np.ndarray,
    *,
    evaluation_mask: np.ndarray | None = None,
    box: np.ndarray | None = None,
    truth_mm: np.ndarray | None = None,
    change: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Every metric of one field on one grid, as the report, the bench and the viewers show them.

    Args:
        field_mm: (z, y, x, 3) LPS mm, fixed -> moving.
        warped_hu, reference_hu: (z, y, x) HU; RMSE compares them.
        index_to_lps: the grid's 3x3 (x, y, z) index step -> LPS step.
        evaluation_mask: (z, y, x) bool, where whole-image metrics count (None: everywhere).
        box: (z, y, x) bool, the step's box, already restricted to the evaluation mask.
        truth_mm: (z, y, x, 3) LPS mm, for TRE.
        change: (previous_mm, around_box): the field before the step ((z, y, x, 3) LPS mm) and the
            box + blend margin ((z, y, x) bool), for the largest change a step made outside it.

    Returns:
        rmse_hu[_box|_outside] (HU), tre_mm[_box] (mean/median/p95 mm), folding_fraction,
        jacobian_min, outside_change_mm; a metric that does not apply is None.
    """
    outside = None
    if box is not None:
        outside = ~box if evaluation_mask is None else (~box & evaluation_mask)
        outside = outside if outside.any() else ~box
    metrics = {
        "rmse_hu": rmse(warped_hu, reference_hu, evaluation_mask),
        "rmse_hu_box": rmse(warped_hu, reference_hu, box) if box is not None else None,
        "rmse_hu_outside": rmse(warped_hu, reference_hu, outside) if box is not None else None,
        "tre_mm": None,
        "tre_mm_box": None,
        **folding(field_mm, index_to_lps),
        "outside_change_mm": None,
    }
    if truth_mm is not None:
        metrics["tre_mm"] = target_registration_error(field_mm, truth_mm, evaluation_mask)
        metrics["tre_mm_box"] = (
            target_registration_error(field_mm, truth_mm, box) if box is not None else None
        )
    if change is not None:
        previous_mm, around_box = change
        metrics["outside_change_mm"] = largest_change_outside(previous_mm, field_mm, around_box)
    return metrics
