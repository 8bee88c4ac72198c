"""The guard: whether a box's refinement is kept, and why not when it is declined.

A correction is declined when it would add folded voxels (det J <= 0) in box + margin (more than
``max_added_fold_share`` of those the field already has there), when it explains less than ``min_gain`` of
the box's remaining dissimilarity under the current field (the gain), or, where the step compares
artefact-matched images, when it explains less than ``min_unfitted_gain`` of the dissimilarity of the images
as given (the pair the current field was not fitted to: a correction that only aligns what matching left of
the streaks does not hold there), where the projection geometry is known, when less than ``min_axis_share``
of its length lies along the scanner's rotation axis (a circular scan's streaks lie across it), when it
leaves less than ``min_motion_left`` of the box's motion (artefacts stay where the scanner put them, so they
favour no motion), and, where it compares the images as given, when a second similarity does not find it
again (``rso.core.native.second_opinion``). A declined step leaves the session as it was
(docs/architecture.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from rso.core.metrics import jacobian_determinant
from rso.core.native.problem import NativeProblem, sample
from rso.core.native.refinement import Refinement
from rso.options import MOTION_LEFT_MIN_MOTION_MM


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
    # The gain on the images as given, where the step compared artefact-matched ones (else None).
    unfitted_gain: float | None = None
    # How far (mm) the second opinion's box mean lies from the correction's, where it ran (else None).
    disagreement_mm: float | None = None
    # The share of the correction's length along the scanner's rotation axis in the box, where the projection
    # geometry is known and the step optimised a correction (else None).
    axis_share: float | None = None
    # The share of the box's RMS motion the correction (or the return) leaves (``motion_left``),
    # where the box moves (else None).
    motion_left: float | None = None
    # The share of the box the current or the corrected field sends outside the moving image
    # (``outside_share``), where the problem knows the image's extent (else None).
    outside_share: float | None = None

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
                "unfitted_gain",
                "disagreement_mm",
                "axis_share",
                "motion_left",
                "outside_share",
            )
        }


def correction_gain(refinement: Refinement, correction: torch.Tensor, pair: int = 0) -> float:
    """1 - dissimilarity(correction) / dissimilarity(none) in the box, on one image pair (0: the fitted
    pair, -1: the images as given where the step compares artefact-matched ones)."""
    with torch.no_grad():
        before = float(refinement.similarity(torch.zeros_like(correction), pair))
        after = float(refinement.similarity(correction, pair))
    return 1.0 - after / before if before > 0 else 0.0


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
    gain, unfitted = _gains(refinement, returned)
    problem = refinement.problem
    region = weights > 0
    det_before, det_after = _jacobians(problem, weights, correction, region)
    folded = (int((det_before <= 0).sum()), int((det_after <= 0).sum()))
    largest, det_min = float(np.linalg.norm(correction[region], axis=-1).max()), float(det_after.min())
    in_box = correction[problem.box.slices]
    # A return to no registration takes back all of the box's motion: judged like a correction.
    left = motion_left(in_box, problem.current_mm[problem.box.slices])
    share = None
    if returned is None and problem.rotation_axis is not None:
        share = axis_share(in_box, problem.rotation_axis)
    outside = outside_share(problem, correction)
    shares = (share, left, outside)
    declined = _declined(refinement.settings, gain, unfitted, folded, det_min, largest, shares)
    return GuardVerdict(
        gain,
        det_min,
        *folded,
        largest,
        declined,
        None if returned is None else returned[0],
        unfitted,
        axis_share=share,
        motion_left=left,
        outside_share=outside,
    )


def outside_share(problem: NativeProblem, correction: np.ndarray) -> float | None:
    """The share of the box's voxels (inside the fit mask where there is one) that the current field, or the
    field with ``correction`` ((Z, Y, X, 3) LPS mm on the window), sends outside the moving image: the larger
    of the two. None where the problem does not know the image's extent.

    There the moving crop holds air, not anatomy (the volume, or the scan's field of view, ends), and a
    correction that brings those samples back inside matches tissue with tissue whatever the motion was.
    """
    if problem.moving_inside is None:
        return None
    steps = torch.from_numpy(np.ascontiguousarray(correction, np.float32)) @ problem.mm_to_index.cpu()
    box = problem.box.slices
    counted = np.ones(problem.box.shape, bool) if problem.fit_mask is None else problem.fit_mask[box]
    shares = []
    with torch.no_grad():
        for index in (problem.base_index, problem.base_index + steps.to(problem.base_index.device)):
            outside = sample(problem.moving_inside, index[box])[0, 0].cpu().numpy() < 0.5
            shares.append(float(outside[counted].mean()) if counted.any() else 0.0)
    return max(shares)


def axis_share(correction: np.ndarray, axis: np.ndarray) -> float | None:
    """mean |c . axis| / mean |c| over the voxels of ``correction`` (..., 3) LPS mm, for ``axis`` (3,) a
    unit vector: 1 along the axis, 0 across it, 0.5 for directions spread evenly. None where the
    correction is zero (no direction)."""
    vectors = correction.reshape(-1, 3).astype(np.float64)
    length = float(np.linalg.norm(vectors, axis=1).mean())
    if length < 1e-6:
        return None
    return float(np.abs(vectors @ np.asarray(axis, np.float64)).mean() / length)


def motion_left(
    correction: np.ndarray, current: np.ndarray, min_motion_mm: float = MOTION_LEFT_MIN_MOTION_MM
) -> float | None:
    """sqrt(sum |u + c|^2 / sum |u|^2) over the voxels of ``correction`` c and ``current`` u (..., 3) LPS
    mm: the share of the box's RMS motion left after the correction (0: back to no motion, 1: as much as
    before, above 1: more, or through no motion to the other side). None where the current motion's RMS
    is below ``min_motion_mm`` (a share of almost no motion says nothing) or zero."""
    c = correction.reshape(-1, 3).astype(np.float64)
    u = current.reshape(-1, 3).astype(np.float64)
    motion = float((u**2).sum())
    if motion <= 0 or motion < len(u) * min_motion_mm**2:
        return None
    return float(np.sqrt(((u + c) ** 2).sum() / motion))


def with_second_opinion(verdict: GuardVerdict, disagreement: float, settings) -> GuardVerdict:
    """The verdict once the second opinion is in: declined where it lies more than
    ``max_disagreement_mm`` from the correction (``disagreement``, mm between the box means)."""
    declined = None
    if disagreement > settings.max_disagreement_mm:
        declined = (
            f"a second similarity does not confirm the correction ({verdict.largest_correction_mm:.1f} mm): "
            f"local NCC finds one whose mean in the box lies {disagreement:.1f} mm from it (at most "
            f"{settings.max_disagreement_mm:.1f} mm is allowed); the images there do not pin the motion down"
        )
    return replace(verdict, disagreement_mm=disagreement, declined=declined)


def _gains(refinement: Refinement, returned: tuple[int, float] | None) -> tuple[float, float | None]:
    """The correction's gain on the fitted pair, and on the images as given where the step compared
    artefact-matched ones (else None); a return to an earlier state brings its own gain."""
    if returned is not None:
        return returned[1], None
    optimised = refinement.correction_mm()
    gain = correction_gain(refinement, optimised)
    unfitted = correction_gain(refinement, optimised, pair=-1) if refinement.has_unfitted_pair else None
    return gain, unfitted


def _jacobians(problem, weights: np.ndarray, correction: np.ndarray, region: np.ndarray):
    """det J of the field in box + margin (``region``, (Z, Y, X) bool), before and after the correction."""
    index_to_lps = problem.window.index_to_lps
    before = jacobian_determinant(problem.current_mm, index_to_lps)[region]
    after = jacobian_determinant(problem.current_mm + weights[..., None] * correction, index_to_lps)
    return before, after[region]


def _declined(
    settings,
    gain: float,
    unfitted: float | None,
    folded: tuple[int, int],
    det_min: float,
    largest: float,
    shares: tuple[float | None, float | None, float | None],
) -> str | None:
    """Why the correction is declined (one sentence for the status line), or None where it is kept.

    ``settings``: the step's RSOSettings; ``folded``: voxels with det J <= 0 before and after;
    ``largest``: the largest correction (mm); ``shares``: its axis share, the motion it leaves and the share
    of the box sent outside the moving image (None: not judged)."""
    share, left, outside = shares
    if folded[1] - folded[0] > settings.max_added_fold_share * folded[0]:
        allowed = settings.max_added_fold_share
        return (
            f"the refinement would fold the field in the box ({folded[1]} folded voxels instead of "
            f"{folded[0]}; min det J {det_min:.2f})"
            + (f"; at most {100 * allowed:.0f} % more are allowed" if allowed and folded[0] else "")
        )
    if outside is not None and outside > settings.max_outside_share:
        return (
            f"the field sends {100 * outside:.0f} % of the box outside the moving image (at most "
            f"{100 * settings.max_outside_share:.0f} % is allowed): the image does not show where that part "
            "moved, so the box cannot be judged"
        )
    if gain < settings.min_gain:
        return (
            f"no correction clearly improves the box: the best ({largest:.1f} mm) explains only "
            f"{100 * gain:.1f} % of the remaining difference (at least {100 * settings.min_gain:g} % is "
            "needed); the images there already agree, or their artefacts hide the motion"
        )
    if unfitted is not None and unfitted < settings.min_unfitted_gain:
        return (
            f"the best correction ({largest:.1f} mm) does not hold on the images as given: it explains "
            f"{100 * unfitted:.1f} % of their difference in the box, against {100 * gain:.1f} % of the "
            f"artefact-matched images' (at least {100 * settings.min_unfitted_gain:g} % is needed)"
        )
    if share is not None and share < settings.min_axis_share:
        return (
            f"the best correction ({largest:.1f} mm) lies mostly across the scanner's rotation axis, where a "
            f"circular scan's streaks lie: {100 * share:.0f} % of its length is along the axis (at least "
            f"{100 * settings.min_axis_share:g} % is needed)"
        )
    if left is not None and left < settings.min_motion_left:
        return (
            f"the step ({largest:.1f} mm) takes the box back toward no motion, which artefacts fixed in the "
            f"scanner favour: it leaves {100 * left:.0f} % of the box's current motion (at least "
            f"{100 * settings.min_motion_left:.0f} % must remain)"
        )
    return None
