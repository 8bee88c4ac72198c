"""The guard's second opinion: the same box refined again under another similarity (local NCC).

Where a step compares the images as given (no artefact matching), the box's own similarity can prefer a
wrong correction as strongly as it prefers a right one elsewhere: on TV phases of half-fan scans, the
structure the clustered views leave in the axial planes is aligned as if it were motion. A correction
the anatomy supports is found again when the box is refined under local NCC of the intensities; one
that MIND's descriptors alone prefer is often not (docs/decisions.md, "The guard's second opinion").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from rso.core.native.problem import NativeProblem
from rso.core.native.refinement import Refinement
from rso.core.optimize import CancelToken, ProgressCallback
from rso.settings import RSOSettings

SECOND_SIMILARITY = "lncc"
STEP_NAME = "rso check"  # what the progress bar shows while the second opinion runs


def wants_second_opinion(refinement: Refinement, returned) -> bool:
    """Whether a kept correction needs a second opinion: it was optimised (not a return to an earlier
    state) on the images as given (a matched step has them as its check), and the second opinion is on."""
    settings = refinement.settings
    return (
        settings.max_disagreement_mm > 0
        and returned is None
        and not (refinement.problem.matched or refinement.has_unfitted_pair)
        and settings.similarity != SECOND_SIMILARITY
    )


def disagreement_mm(
    problem: NativeProblem,
    settings: RSOSettings,
    correction: np.ndarray,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> float:
    """How far apart (mm) the box means of ``correction`` and of the second opinion's correction are.

    ``correction``: (Z, Y, X, 3) LPS mm on the problem's window. The second opinion is the step itself
    (translation search, then Adam) under local NCC; it reports its progress as ``STEP_NAME``.
    """
    other = Refinement(problem, replace(settings, similarity=SECOND_SIMILARITY))
    other.start_at(other.search_translation())
    other.run(settings.iterations, _relabelled(progress), cancel)
    with torch.no_grad():
        theirs = other.correction_mm()[0].permute(1, 2, 3, 0).cpu().numpy()
    box = problem.box.slices
    mine_mean, their_mean = (c[box].reshape(-1, 3).mean(axis=0) for c in (correction, theirs))
    return float(np.linalg.norm(their_mean - mine_mean))


def _relabelled(progress: ProgressCallback | None) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda update: progress(replace(update, step=STEP_NAME))
