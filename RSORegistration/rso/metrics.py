"""Registration quality against ground truth: RMSE in HU, TRE in mm, Jacobian, locality.

MONAI has no TRE or Jacobian metric, so these are small and tested here. Fields are
(z, y, x, 3) LPS millimetres on a grid whose (x, y, z) index step is ``index_to_lps``.
"""

from __future__ import annotations

import numpy as np


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if mask is not None:
        diff = diff[mask]
    return float(np.sqrt(np.mean(diff**2))) if diff.size else None


def jacobian_determinant(field_mm: np.ndarray, index_to_lps: np.ndarray) -> np.ndarray:
    """det(I + du/dx) of x -> x + u(x), by central differences, in physical space."""
    # du/d(index) along array axes (z, y, x) -> reorder columns to index order (x, y, z).
    gradients = np.stack(np.gradient(field_mm.astype(np.float64), axis=(0, 1, 2)), axis=-1)[..., ::-1]
    du_dx = gradients @ np.linalg.inv(index_to_lps)
    return np.linalg.det(np.eye(3) + du_dx)


def folding(field_mm: np.ndarray, index_to_lps: np.ndarray) -> dict:
    det = jacobian_determinant(field_mm, index_to_lps)
    return {"folding_fraction": float(np.mean(det <= 0)), "jacobian_min": float(det.min())}


def target_registration_error(field_mm: np.ndarray, truth_mm: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Dense TRE: the distance between estimated and true fixed->moving positions at each voxel."""
    error = np.linalg.norm(field_mm.astype(np.float64) - truth_mm, axis=-1)
    if mask is not None:
        error = error[mask]
    return {"mean": float(error.mean()), "median": float(np.median(error)), "p95": float(np.percentile(error, 95))}


def largest_change_outside(old_mm: np.ndarray, new_mm: np.ndarray, inside: np.ndarray) -> float:
    """The largest displacement change (mm) where ``inside`` is False: what a step did elsewhere."""
    change = np.linalg.norm(new_mm.astype(np.float64) - old_mm, axis=-1)[~inside]
    return float(change.max()) if change.size else 0.0
