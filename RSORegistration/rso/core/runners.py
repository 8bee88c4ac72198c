"""The step runners: each kind of step proposes a candidate state; the session decides and records it.

A runner never changes the session: it works on copies (a deep-copied network, a new field) and
returns a ``Candidate``. Native RSO may instead decline the box (its guard, ``rso.core.native``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from rso.core.boxes import Box
from rso.core.geometry import ModelGrid
from rso.core.iso_guard import given_gain, lung_axis_share
from rso.core.losses import RegistrationLoss
from rso.core.model import RegistrationNet
from rso.core.native import build_problem, limit_to_fit_mask, refine_box
from rso.core.optimize import (
    Feedback,
    blend_weights,
    compose_local,
    crop_window,
    fine_tune,
    optimise_field,
    predict,
    relative_to,
)
from rso.core.pair import ImagePair
from rso.core.patches import FieldPatch
from rso.core.store import SessionState
from rso.options import ISO_MIN_AXIS_SHARE, ISO_MIN_GIVEN_GAIN
from rso.settings import RSOSettings

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A proposed state: the coarse field (3, z, y, x) in model-grid voxels, the fine patches on top of
    it, the network whose weights come with it (the session's own when a step leaves them), the loss
    curve and what the step reports besides (``notes``: ISO's guard, its gain and a kept start)."""

    field: np.ndarray
    net: torch.nn.Module
    losses: list
    patches: tuple[FieldPatch, ...] = ()
    notes: dict = dataclasses.field(default_factory=dict)
    # Why the step's guard declined it (the session then stays as it was), and the guard's numbers.
    declined: str | None = None
    guard: dict | None = None


@dataclass
class StepContext:
    """What every runner reads: the pair, the session's network and its loss, and the progress hooks."""

    pair: ImagePair
    net: RegistrationNet
    loss: RegistrationLoss
    progress: object = None
    cancel: object = None

    @property
    def grid(self) -> ModelGrid:
        return self.pair.grid


def general(ctx: StepContext) -> Candidate:
    """The general model's one forward pass (paper step 1)."""
    field = predict(ctx.net, ctx.pair.fixed_t, ctx.pair.moving_t)[0].cpu().numpy()
    return Candidate(field, ctx.net, [])


def iso(ctx: StepContext, params: dict, state: SessionState) -> Candidate:
    """Fine-tune a copy of the weights on the whole pair (paper eq. 3), matched where ``params`` says so.

    With ``params["guard"]`` ISO's field is judged (``rso.core.iso_guard``): on the matched pair it is kept
    only where the images as given agree clearly better under it than under ``state``'s; without projection
    geometry only where its change in the lungs lies mostly along the body's axis. Elsewhere the candidate
    is ``state`` itself, and ``notes`` say so. On TV phases the guarded ISO does not fit at all
    (``ScanPair.iso_decline``)."""
    declined = ctx.pair.scans.iso_decline() if params["guard"] and ctx.pair.scans is not None else None
    if declined:
        log.info("iso: %s", declined)
        return Candidate(state.field, ctx.net, [], state.patches, {"kept": "start", "why": declined})
    net = copy.deepcopy(ctx.net)
    fixed_t, moving_t = ctx.pair.network_inputs(params["artefacts_matched"])
    losses = fine_tune(
        net,
        fixed_t,
        moving_t,
        iterations=params["iterations"],
        loss_fn=ctx.loss,
        learning_rate=params["learning_rate"],
        feedback=Feedback("iso", ctx.progress, ctx.cancel),
    )
    field = _faded_at_the_ends(ctx, state, predict(net, fixed_t, moving_t), params["end_fade_mm"])
    if params["guard"] and params["artefacts_matched"]:
        return _judged_as_given(ctx, state, Candidate(field[0].cpu().numpy(), net, losses))
    if params["guard"] and ctx.pair.scans is None:
        return _judged_by_axis(ctx, state, Candidate(field[0].cpu().numpy(), net, losses))
    return Candidate(field[0].cpu().numpy(), net, losses)


def _faded_at_the_ends(ctx: StepContext, state: SessionState, field: torch.Tensor, fade_mm: float):
    """ISO's ``field`` (1, 3, z, y, x) in voxels with its change from ``state`` scaled by d / ``fade_mm``
    (at most 1; 0 at and beyond the end), d (mm) how far inside the model grid's z axis (the axis nearest
    the body's, whose ends are the images') ``state``'s field carries the voxel: where the scan ends inside
    moving tissue, what crossed the end has no counterpart, and fitting the images pulls its motion to zero
    (docs/decisions.md, "ISO where the scan ends inside the lungs")."""
    if fade_mm <= 0:
        return field
    start = torch.from_numpy(ctx.pair.effective_voxels(state.field, state.patches)).to(field)[None]
    count = ctx.grid.shape[0]
    carried = torch.arange(count, dtype=field.dtype, device=field.device)[:, None, None] + start[0, 0]
    inside_mm = (torch.minimum(carried, count - 1 - carried) + 0.5) * ctx.grid.spacing[2]  # spacing (x, y, z)
    return start + torch.clamp(inside_mm / fade_mm, 0.0, 1.0) * (field - start)


def _judged_as_given(ctx: StepContext, state: SessionState, fitted: Candidate) -> Candidate:
    """ISO's field on the matched pair, kept where the images as given prefer it by ISO_MIN_GIVEN_GAIN."""
    pair = ctx.pair
    proposed = torch.from_numpy(fitted.field).to(pair.fixed_t.device)[None]
    start = torch.from_numpy(pair.effective_voxels(state.field, state.patches)).to(proposed)[None]
    gain = given_gain(fitted.net.warp, pair.network_inputs(False), start, proposed, pair.fit_t)
    notes = {"given_gain": round(gain, 4)}
    if gain > ISO_MIN_GIVEN_GAIN:
        return dataclasses.replace(fitted, notes=notes)
    log.info(
        "iso: its field removes %.1f %% of the images' dissimilarity as given (at least %.0f %% is "
        "needed): the field stays",
        100 * gain,
        100 * ISO_MIN_GIVEN_GAIN,
    )
    return Candidate(state.field, ctx.net, fitted.losses, state.patches, {**notes, "kept": "start"})


def _judged_by_axis(ctx: StepContext, state: SessionState, fitted: Candidate) -> Candidate:
    """ISO's field without projection geometry, kept where its change in the lungs lies along the body's
    superior-inferior axis by at least ISO_MIN_AXIS_SHARE (a fit to streaks moves them across it)."""
    pair = ctx.pair
    if any(window is not None for window in (pair.normalisation.fixed, pair.normalisation.moving)):
        return dataclasses.replace(fitted, notes=_unguarded("the images are not CT"))
    change = ctx.grid.voxels_to_mm(fitted.field - pair.effective_voxels(state.field, state.patches))
    share = lung_axis_share(change, pair.fixed_hu, pair.fit_grid)
    if share is None:
        return dataclasses.replace(fitted, notes=_unguarded("no lungs to judge it by"))
    notes = {"axis_share": round(share, 4)}
    if share >= ISO_MIN_AXIS_SHARE:
        return dataclasses.replace(fitted, notes=notes)
    log.info(
        "iso: without projection geometry its field moved the lungs mostly across the body's axis (%.0f %% "
        "of the change along it, at least %.0f %% is needed), as a fit to the streaks of phase-binned CBCT "
        "does: the field stays",
        100 * share,
        100 * ISO_MIN_AXIS_SHARE,
    )
    return Candidate(state.field, ctx.net, fitted.losses, state.patches, {**notes, "kept": "start"})


def _unguarded(why: str) -> dict:
    """Where nothing can judge ISO's field without projection geometry: say so, in the log and in the step's
    params (``unguarded``), with what to do for phase-binned CBCT (on its phases ISO fits their streaks)."""
    log.warning(
        "iso: nothing guards ISO here (no projection geometry, and %s); on phase-binned cone-beam CBCT it "
        "fits the phases' streaks and can make the registration worse: for such phases without their "
        "geometry files, skip ISO (--iso 0)",
        why,
    )
    return {"unguarded": f"no projection geometry; {why}"}


def network_rso(ctx: StepContext, old: np.ndarray, box: Box, settings: RSOSettings) -> Candidate:
    """RSO in the network modes (full, crop) or on the model-grid field (direct), from field ``old``; on
    the artefact-matched pair where ``settings.match_artefacts`` and both geometries are known, as ISO."""
    pair = ctx.pair
    margin = margin_voxels(ctx.grid, settings.blend_margin_mm)
    notes = {"artefacts_matched": _fits_matched(pair, settings)}
    fixed, moving = pair.network_inputs(notes["artefacts_matched"])
    if settings.mode == "full":
        window, region = None, box.voxels.slices
    else:
        window = crop_window(box.voxels, old, ctx.grid.shape, margin)
        fixed, moving = fixed[(..., *window.slices)], moving[(..., *window.slices)]
        region = relative_to(box.voxels, window)
    target = (slice(None), *window.slices) if window is not None else (slice(None),)
    loss = ctx.loss if window is None else ctx.loss.on_window(window.slices)  # the fit mask cropped alike
    common = dict(
        iterations=settings.iterations,
        loss_fn=loss,
        region=region,
        feedback=Feedback("rso", ctx.progress, ctx.cancel),
    )
    if settings.mode == "direct":  # the weights stay as they are; only the field in the window moves
        net = ctx.net
        start = torch.from_numpy(old[target]).to(pair.device)[None]
        new_window, losses = optimise_field(start, (fixed, moving, net.warp), **common)
    else:
        net = copy.deepcopy(ctx.net)
        rate = settings.learning_rate
        losses = fine_tune(net, fixed, moving, learning_rate=rate, **common)
        if settings.compose == "global":
            whole = pair.network_inputs(notes["artefacts_matched"])
            return Candidate(predict(net, *whole)[0].cpu().numpy(), net, losses, notes=notes)
        new_window = predict(net, fixed, moving)
    candidate = old.copy()
    candidate[target] = new_window[0].cpu().numpy()
    weights = blend_weights(box.voxels, margin, ctx.grid.shape)
    candidate = Candidate(compose_local(old, candidate, weights[None]), net, losses, notes=notes)
    return network_guard(ctx, old, candidate, box, settings)


def _fits_matched(pair: ImagePair, settings: RSOSettings) -> bool:
    return bool(settings.match_artefacts and pair.geometry)


def network_guard(
    ctx: StepContext, old: np.ndarray, candidate: Candidate, box: Box, settings: RSOSettings
) -> Candidate:
    """Where both geometries are known, a local network step must also explain ``settings.min_unfitted_gain``
    of the box's MIND dissimilarity (model grid, inside the fit mask) on the pair it did not fit, as
    native RSO's guard: the images as given after fitting the matched pair, else the matched pair. On
    cone-beam streaks a step fitted to one pair's streaks does not hold on the other's (docs/decisions.md).

    ``old``: (3, z, y, x) the field before the step, model-grid voxels; the candidate's field likewise."""
    pair = ctx.pair
    if pair.geometry is None:
        return candidate
    matched = not _fits_matched(pair, settings)  # the pair the step did not fit
    mask = torch.zeros_like(pair.fixed_t)
    mask[(..., *box.voxels.slices)] = 1.0
    mask = mask if pair.fit_t is None else mask * pair.fit_t  # the box inside the fit mask
    start, proposed = (torch.from_numpy(f).to(pair.fixed_t)[None] for f in (old, candidate.field))
    gain = given_gain(ctx.net.warp, pair.network_inputs(matched), start, proposed, mask)
    candidate.guard = {"unfitted_gain": round(gain, 4)}
    if gain < settings.min_unfitted_gain:
        other = "artefact-matched images" if matched else "images as given"
        candidate.declined = (
            f"the step does not hold on the {other}: it explains {100 * gain:.1f} % of their difference "
            f"in the box (at least {100 * settings.min_unfitted_gain:g} % is needed)"
        )
    return candidate


def native_rso(ctx: StepContext, states: list[SessionState], box: Box, settings: RSOSettings) -> Candidate:
    """Native-resolution RSO from the last of ``states`` (the earlier ones: where the box may return): the
    state with a new fine patch, or the state as it was with why the guard declined the box."""
    pair, grid, state = ctx.pair, ctx.grid, states[-1]
    earlier = states[:-1] if settings.returns else []
    fixed, moving = pair.compared_images(settings.match_artefacts)
    matched = fixed is not pair.fixed
    # The images as given: the guard's check on a matched step (min_unfitted_gain), and the evidence for a
    # return; loaded whether or not the step may return.
    unfitted = (pair.fixed, pair.moving) if matched else None
    problem = build_problem(
        (fixed, moving),
        box,
        settings.blend_margin_mm,
        grid,
        (grid.voxels_to_mm(state.field), state.patches),
        pair.device,
        tuple((grid.voxels_to_mm(e.field), e.patches) for e in earlier),
        unfitted,
    )
    problem = limit_to_fit_mask(problem, pair.fit_mask)  # the similarity inside box and fit mask only
    problem = dataclasses.replace(problem, matched=matched, rotation_axis=pair.rotation_axis())
    patch, losses, verdict = refine_box(problem, settings, ctx.progress, ctx.cancel)
    step = Candidate(state.field, ctx.net, losses, state.patches, {"artefacts_matched": matched})
    step.guard = verdict.to_dict()
    if patch is None:
        step.declined = verdict.declined
        if pair.scans is not None:  # the scan may say why the motion is hidden
            step.declined += pair.scans.decline_note()
        return step
    if verdict.returned_to is not None:
        log.info(
            "rso: the images prefer the box as it was after step %d: it returns there", verdict.returned_to
        )
    return dataclasses.replace(step, patches=(*state.patches, patch))


def margin_voxels(grid: ModelGrid, margin_mm: float) -> np.ndarray:
    """A margin in mm as whole model-grid voxels per axis (z, y, x), rounded up."""
    return np.ceil(margin_mm / grid.voxel_size_mm()).astype(int)
