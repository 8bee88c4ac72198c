"""Test-time fine-tuning (ISO and RSO), crop windows and locality-preserving composition.

These functions are pure: they take tensors and a network and return new ones. The session
decides what to keep, which is what makes undo and cancel exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rso.core.boxes import VoxelBox
from rso.core.geometry import GRID_MULTIPLE
from rso.core.losses import RegistrationLoss
from rso.errors import Cancelled, Diverged
from rso.options import PAPER_LEARNING_RATE

log = logging.getLogger(__name__)

DIRECT_LEARNING_RATE = 0.02  # voxels per iteration, roughly: Adam's steps are about this size
DIRECT_COARSENING = 2  # the direct mode's update lives on a grid this many times coarser than the window


@dataclass(frozen=True)
class Progress:
    """One optimisation iteration, as reported to a progress bar or the Slicer widget."""

    step: str  # "iso" or "rso"
    iteration: int  # iterations done, 1-based
    iterations: int
    loss: float
    elapsed: float  # seconds since the step started
    eta: float  # seconds still expected

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Cooperative cancellation: the loop checks it between iterations."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("step cancelled; the session is unchanged")


@dataclass(frozen=True)
class Feedback:
    """Where an optimisation reports: its step's name ("iso" or "rso"), progress and cancellation."""

    step: str = "iso"
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None


def fine_tune(
    net: torch.nn.Module,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    iterations: int,
    loss_fn: RegistrationLoss,
    region: tuple[slice, ...] | None = None,
    learning_rate: float = PAPER_LEARNING_RATE,
    feedback: Feedback = Feedback(),
) -> list[float]:
    """Adam at a constant learning rate on ``net``'s weights (in place); returns the loss per iteration.

    ``region`` restricts the similarity to a box (RSO, paper eq. 6); None is the whole image (ISO).
    """
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    net.train()
    return _optimise(
        optimizer,
        lambda: net(fixed, moving),
        (fixed, moving, net.warp),
        loss_fn,
        region,
        iterations,
        feedback,
    )


def _optimise(optimizer, displacement_of, images, loss_fn, region, iterations, feedback: Feedback):
    """ISO, RSO and direct-field steps: the registration loss of the warped moving image.

    ``images``: (fixed, moving, warp), the warp applied to the moving image by each displacement."""
    fixed, moving, warp = images

    def loss() -> torch.Tensor:
        displacement = displacement_of()
        return loss_fn(fixed, warp(moving, displacement), displacement, region)

    return run_iterations(optimizer, loss, iterations, feedback)


def run_iterations(
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[], torch.Tensor],
    iterations: int,
    feedback: Feedback,
) -> list[float]:
    """The loop every optimisation shares: loss, step, progress with ETA, cancel between iterations.

    Returns the loss per iteration. Raises Diverged on a non-finite loss and Cancelled when asked.
    """
    step, progress, cancel = feedback.step, feedback.progress, feedback.cancel
    losses: list[float] = []
    start = time.perf_counter()
    for iteration in range(1, iterations + 1):
        if cancel is not None:
            cancel.check()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of()
        if not torch.isfinite(loss):
            raise Diverged(
                f"{step.upper()} diverged at iteration {iteration} (non-finite loss); the session is "
                "unchanged: try fp32 precision or a lower learning rate"
            )
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            elapsed = time.perf_counter() - start
            eta = elapsed / iteration * (iterations - iteration)
            progress(Progress(step, iteration, iterations, losses[-1], elapsed, eta))
    if cancel is not None:
        cancel.check()
    return losses


def optimise_field(
    field: torch.Tensor,
    images: tuple,
    *,
    iterations: int,
    loss_fn: RegistrationLoss,
    region: tuple[slice, ...],
    learning_rate: float = DIRECT_LEARNING_RATE,
    feedback: Feedback = Feedback("rso"),
) -> tuple[torch.Tensor, list[float]]:
    """Direct-field RSO: Adam on a displacement update itself, no network (a third mode).

    ``field``: (1, 3, z, y, x) voxels, the start; ``images``: (fixed, moving, warp) as ``_optimise``
    takes them. The update lives on a grid DIRECT_COARSENING times coarser than the window and is
    upsampled trilinearly, which keeps it smooth without a strong regulariser; it starts at zero.
    """
    coarse_shape = [max(2, n // DIRECT_COARSENING) for n in field.shape[2:]]
    update = torch.zeros((1, 3, *coarse_shape), device=field.device, requires_grad=True)
    optimizer = torch.optim.Adam([update], lr=learning_rate)

    def current() -> torch.Tensor:
        return field + torch.nn.functional.interpolate(
            update, size=field.shape[2:], mode="trilinear", align_corners=True
        )

    losses = _optimise(optimizer, current, images, loss_fn, region, iterations, feedback)
    with torch.no_grad():
        return current(), losses


@torch.no_grad()
def predict(net: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    net.eval()
    return net(fixed, moving)


def crop_window(
    box: VoxelBox,
    displacement: np.ndarray,
    grid_shape: tuple[int, int, int],
    blend_margin: np.ndarray,
    context: int = 8,
) -> VoxelBox:
    """The sub-volume fed to the network in ``crop`` mode.

    It holds the box and its blend margin, every moving-image voxel the current field samples for
    the box (the field's extent in and around the box), plus ``context`` voxels, and it is sized
    in multiples of 16 for the UNet's four stride-2 levels.
    """
    around = box.expanded(blend_margin, grid_shape)
    reach = displacement[(slice(None), *around.slices)].reshape(3, -1)
    lo = np.minimum(np.array(around.lo), np.array(box.lo) + np.floor(reach.min(axis=1)).astype(int))
    hi = np.maximum(np.array(around.hi), np.array(box.hi) + np.ceil(reach.max(axis=1)).astype(int))
    lo, hi = lo - context, hi + context
    size = np.minimum(-(-(hi - lo) // GRID_MULTIPLE) * GRID_MULTIPLE, grid_shape)
    # Centre the rounded window on the wanted one, then slide it back inside the grid.
    start = np.clip(lo - (size - (hi - lo)) // 2, 0, np.array(grid_shape) - size)
    return VoxelBox(tuple(start.tolist()), tuple((start + size).tolist()))


def relative_to(box: VoxelBox, window: VoxelBox) -> tuple[slice, ...]:
    """The box's slices inside a cropped window."""
    return tuple(slice(a - w, b - w) for a, b, w in zip(box.lo, box.hi, window.lo))


def blend_weights(box: VoxelBox, margin: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """1 inside the box, a cosine ramp to 0 across ``margin`` voxels (per axis), exactly 0 beyond.

    The product of per-axis ramps is smooth and vanishes as soon as any axis leaves box + margin,
    which is what makes ``local`` composition leave the outside bit-for-bit unchanged.
    """
    weights = np.ones(shape, np.float32)
    for axis, (lo, hi, width) in enumerate(zip(box.lo, box.hi, np.broadcast_to(margin, (3,)))):
        index = np.arange(shape[axis])
        outside = np.maximum(np.maximum(lo - index, index - (hi - 1)), 0).astype(np.float32)
        ramp = np.where(outside <= width, 0.5 * (1 + np.cos(np.pi * outside / (width + 1))), 0.0)
        weights *= ramp.reshape([-1 if a == axis else 1 for a in range(3)]).astype(np.float32)
    return weights


def compose_local(old: np.ndarray, new: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """old + w (new - old): the new field inside the box, the old one wherever w == 0."""
    return np.where(weights > 0, old + weights * (new - old), old).astype(np.float32)
