"""RSO at the fixed image's own resolution: a smooth correction of the field inside the clinician's box.

The network's model grid has 5-6 mm voxels; the box is where the clinician looks closely. Here the
box gets a window of its own (box + blend margin) at the fixed image's spacing, at most 2 mm and
at least 1 mm, independent of the model grid. On it a correction ``c`` of the current field is
optimised:

* **Capture first**: a translation search (block matching over +-12 mm) finds the box's offset, which
  a gradient step from zero misses beyond a few millimetres; Adam then refines from there.
* **Return to an earlier answer** (``returns``): a whole-image step can move a region away from
  an answer that was better there. ISO fits the artefact-matched pair, so that pair is biased towards
  ISO's answer; the images as given carry other streaks and were not fitted. Where they prefer an
  earlier state's field (no registration, the general model, ...) in the box by the guard's margin,
  the step returns the box to it, and does not refine it on the pair ISO fitted.
* **Few unknowns**: ``c`` lives on a control grid (8 mm by default), interpolated trilinearly.
* **A similarity streaks fool less**: MIND-SSC descriptors (radius 2, dilation 2) of the fixed
  window and of the moving image around it, both pre-smoothed (``rso.core.mind``), compared in the box
  (and only inside the session's fit mask, where it has one: ``limit_to_fit_mask``).
* **Regularised as a correction**: the diffusion penalty acts on ``c``, not on the total field, so
  real breathing motion already in the field costs nothing; a barrier keeps det J away from folding.
* **A guard**: the step is declined when the best correction does not explain the images clearly
  better than no correction, when it would add folded voxels (``GuardVerdict``), where the projection
  geometry is known, when it lies mostly across the scanner's rotation axis (``axis_share``), when it
  takes the box back toward no motion (``motion_left``: artefacts fixed in the scanner favour none),
  when the field sends too much of the box outside the moving image (``outside_share``),
  or, on the images as given, when the box refined under local NCC lands elsewhere
  (``second_opinion``).

The defaults in ``rso.options`` were chosen on the training anatomies (scripts/sweep_rso.py).

The result is a ``FieldPatch``: ``c`` times the blend weights (1 in the box, a cosine ramp to 0
across the margin), exactly zero beyond box + margin (docs/architecture.md §4).

The modules, by job: ``problem`` (the window grid and the resampled images, ``build_problem``),
``refinement`` (the correction, its loss, the translation search and Adam), ``returns`` (the return to
an earlier state), ``guard`` (``guard_verdict``: keep or decline), ``second_opinion`` (the box refined
again under local NCC) and ``refine`` (``refine_box``, one step).
"""

from __future__ import annotations

from rso.core.native.guard import (
    GuardVerdict,
    axis_share,
    guard_verdict,
    motion_left,
    outside_share,
    with_second_opinion,
)
from rso.core.native.problem import (
    REACH_MARGIN_MM,
    WINDOW_SPACING_MM,
    NativeProblem,
    build_problem,
    correction_tensor,
    current_field_on,
    float_tensor,
    limit_to_fit_mask,
    sample,
    sample_batch,
    window_grid,
)
from rso.core.native.refine import refine_box
from rso.core.native.refinement import (
    FOLD_MARGIN,
    FOLD_WEIGHT,
    SEARCH_REACH_MM,
    SHIFT_PENALTY,
    Refinement,
)
from rso.core.native.returns import EarlierState, earlier_state_to_return_to

__all__ = [
    "FOLD_MARGIN",
    "FOLD_WEIGHT",
    "REACH_MARGIN_MM",
    "SEARCH_REACH_MM",
    "SHIFT_PENALTY",
    "WINDOW_SPACING_MM",
    "EarlierState",
    "GuardVerdict",
    "NativeProblem",
    "Refinement",
    "axis_share",
    "build_problem",
    "correction_tensor",
    "current_field_on",
    "earlier_state_to_return_to",
    "float_tensor",
    "guard_verdict",
    "limit_to_fit_mask",
    "motion_left",
    "outside_share",
    "refine_box",
    "sample",
    "sample_batch",
    "window_grid",
    "with_second_opinion",
]
