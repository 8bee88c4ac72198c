"""The return to an earlier state: the policy that may give the box back an earlier state's field.

A whole-image step can move a region away from an answer that was better there. ISO fits the
artefact-matched pair, so that pair is biased towards ISO's answer; the images as given carry other
streaks and were not fitted. Where that evidence prefers an earlier state's field (no registration,
the general model, ...) in the box by the guard's margin (``min_gain``), the step returns the box to
it and refines nothing (``RSOSettings.returns``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rso.core.native.problem import NativeProblem, correction_tensor


@dataclass(frozen=True)
class EarlierState:
    """The earlier state the box returns to."""

    index: int  # in ``problem.earlier_mm``
    gain: float  # 1 - dissimilarity(its field) / dissimilarity(the current field), on the evidence
    correction_mm: torch.Tensor  # (1, 3, Z, Y, X) LPS mm on the window: its field minus the current one


def earlier_state_to_return_to(
    problem: NativeProblem, evidence: Callable[[torch.Tensor], torch.Tensor], min_gain: float
) -> EarlierState | None:
    """The earlier state whose field the evidence prefers, if it explains at least ``min_gain`` of the box's
    remaining dissimilarity under the current field; else None.

    ``evidence`` maps a (1, 3, Z, Y, X) LPS-mm correction of the current field to the box's dissimilarity
    (a scalar tensor, lower is better) on the images the current field was not fitted to.
    """
    device = problem.fixed.device
    current = problem.current_mm
    candidates = [correction_tensor(e - current, device) for e in problem.earlier_mm]
    with torch.no_grad():
        now = float(evidence(torch.zeros((1, 3, *problem.window.shape), device=device)))
        gains = [1.0 - float(evidence(c)) / now if now > 0 else 0.0 for c in candidates]
    best = int(np.argmax(gains)) if gains else None
    if best is None or gains[best] < min_gain:
        return None
    return EarlierState(best, gains[best], candidates[best])
