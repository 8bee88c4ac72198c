"""The guard: whether a box's refinement is kept, and why not when it is declined.

A correction is declined when it would add folded voxels (det J <= 0) in box + margin, or when it
explains less than ``min_gain`` of the box's remaining dissimilarity under the current field (the
gain). A declined step leaves the session as it was (docs/architecture.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rso.core.metrics import jacobian_determinant
from rso.core.native.refinement import Refinement


@dataclass(frozen=True)
class GuardVerdict:
    """Whether a refinement explains the box better, and why not when it does not."""

    gain: float  # 1 - similarity(c) / similarity(0): the fraction of the box's dissimilarity removed
    jacobian_min: float  # smallest det J of the refined field in box + margin
    folded_before: int  # voxels with det J <= 0 in box + margin, before and after
    folded_after: int
    largest_correction_mm: float
    declined: str | None
    # The earlier state the box returned to (its index in the session's history).
    returned_to: int | None = None

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "gain",
                "jacobian_min",
                "folded_before",
                "folded_after",
                "largest_correction_mm",
                "returned_to",
            )
        }


def guard_verdict(
    refinement: Refinement,
    weights: np.ndarray,
    correction: np.ndarray,
    returned: tuple[int, float] | None = None,
) -> GuardVerdict:
    """Decline a correction that does not clearly beat no correction, or that would add folding.

    ``weights``: (Z, Y, X) the blend weights on the window; ``correction``: (Z, Y, X, 3) LPS mm on the
    window. ``returned``: (state, gain) where the correction returns the box to an earlier state: its gain was
    measured on the unfitted pair (``Refinement.choose_return``), not on the pair the current field
    fitted.
    """
    problem = refinement.problem
    if returned is None:
        with torch.no_grad():
            before = float(refinement.similarity(torch.zeros_like(refinement.correction_mm())))
            after = float(refinement.similarity(refinement.correction_mm()))
        gain = 1.0 - after / before if before > 0 else 0.0
    else:
        gain = returned[1]
    region = weights > 0
    index_to_lps = problem.window.index_to_lps
    det_before = jacobian_determinant(problem.current_mm, index_to_lps)[region]
    det_after = jacobian_determinant(problem.current_mm + weights[..., None] * correction, index_to_lps)[
        region
    ]
    folded_before, folded_after = int((det_before <= 0).sum()), int((det_after <= 0).sum())
    largest = float(np.linalg.norm(correction[region], axis=-1).max())
    declined = None
    if folded_after > folded_before:
        declined = (
            f"the refinement would fold the field in the box ({folded_after} folded voxels instead of "
            f"{folded_before}; min det J {det_after.min():.2f})"
        )
    elif gain < refinement.settings.min_gain:
        declined = (
            f"the images in the box already agree: the best correction ({largest:.1f} mm) explains only "
            f"{100 * gain:.1f} % of the remaining difference "
            f"(at least {100 * refinement.settings.min_gain:.0f} % is needed)"
        )
    return GuardVerdict(
        gain,
        float(det_after.min()),
        folded_before,
        folded_after,
        largest,
        declined,
        None if returned is None else returned[0],
    )
