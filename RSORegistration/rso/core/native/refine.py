"""One box's native RSO step: from its problem to a patch, the loss curve and the guard's verdict."""

from __future__ import annotations

import numpy as np
import torch

from rso.core.native.guard import guard_verdict, with_second_opinion
from rso.core.native.problem import NativeProblem
from rso.core.native.refinement import Refinement
from rso.core.native.second_opinion import disagreement_mm, wants_second_opinion
from rso.core.optimize import CancelToken, ProgressCallback, blend_weights
from rso.core.patches import FieldPatch
from rso.settings import RSOSettings


def refine_box(
    problem: NativeProblem,
    settings: RSOSettings,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
):
    """Optimise the correction; returns (patch, losses, verdict). The patch is None when declined.

    Where the box returns to an earlier state (``returns``) there is nothing to optimise: refining
    it on the fitted pair would pull it back towards the answer that pair had misled (``returns``).
    A correction the guard keeps on the images as given gets a second opinion (``second_opinion``).
    """
    refinement = Refinement(problem, settings)
    returned = refinement.choose_return() if settings.returns else None
    losses = []
    if returned is None:
        refinement.start_at(refinement.search_translation())
        losses = refinement.run(settings.iterations, progress, cancel)
    with torch.no_grad():
        correction = refinement.correction_mm()[0].permute(1, 2, 3, 0).cpu().numpy()
    weights = blend_weights(problem.box, problem.margin_voxels, problem.window.shape)
    verdict = guard_verdict(refinement, weights, correction, returned)
    if verdict.declined is None and wants_second_opinion(refinement, returned):
        disagreement = disagreement_mm(problem, settings, correction, progress, cancel)
        verdict = with_second_opinion(verdict, disagreement, settings)
    patch = (
        None
        if verdict.declined
        else FieldPatch(problem.window, (weights[..., None] * correction).astype(np.float32))
    )
    return patch, losses, verdict
