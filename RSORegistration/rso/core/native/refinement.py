"""The refinement of one box: the correction's parameters, its loss and its optimisation.

The correction ``c`` (LPS mm on the window) is a start (zero, or an earlier state's field minus the
current one) plus a part optimised on a control grid, interpolated trilinearly. The loss compares the
box under ``c`` (MIND-SSC descriptors, LNCC or MSE), penalises the diffusion of the optimised part and
puts a barrier on det J; a translation search (block matching) gives Adam its start.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.layers import GaussianFilter

from rso.core.losses import MIND_RADIUS, masked_mean
from rso.core.metrics import jacobian_determinant_torch
from rso.core.mind import mind_ssc
from rso.core.native.problem import NativeProblem, float_tensor, sample, sample_batch
from rso.core.native.returns import earlier_state_to_return_to
from rso.core.optimize import CancelToken, Feedback, ProgressCallback, blend_weights, run_iterations
from rso.settings import RSOSettings

FOLD_MARGIN = 0.3  # det J below this costs: the refinement keeps the field well away from folding
FOLD_WEIGHT = 1000.0  # a few folded voxels among ~40 000 must outweigh the similarity they buy
SEARCH_REACH_MM = 12.0  # the translation search looks this far from the current field
SHIFT_PENALTY = 0.05  # a shift as long as the reach costs 5 % more than no shift


class Refinement:
    """The correction's parameters, the loss and the optimisation for one problem."""

    def __init__(self, problem: NativeProblem, settings: RSOSettings):
        self.problem, self.settings = problem, settings
        window = problem.window
        spacing = window.spacing[0]
        extent = np.array(window.shape) * spacing
        control = tuple(int(max(2, np.ceil(e / settings.control_spacing_mm) + 1)) for e in extent)
        device = problem.fixed.device
        self.control = torch.zeros((1, 3, *control), device=device, requires_grad=True)
        # A fixed part of the correction: zero, or an earlier state's field minus the current one
        # (choose_return).
        self.start = torch.zeros((1, 3, *window.shape), device=device)
        self.box = (slice(None), slice(None), *problem.box.slices)
        # Where the similarity is measured in the box: (1, 1, Zb, Yb, Xb) 1 inside the fit mask, or None
        # (the whole box); the regularisers act on the whole window all the same.
        fit = problem.fit_mask
        self.fit = None if fit is None else float_tensor(fit[problem.box.slices], device)[None, None]
        self.spacing = spacing
        # (moving, fixed) features per image pair: [0] the fitted pair, [-1] the unfitted one where there
        # is one.
        self.pair_features = list(zip(self._features(problem.moving), self._features(problem.fixed)))
        self.diffusion = DiffusionLoss()
        self.weights = float_tensor(blend_weights(problem.box, problem.margin_voxels, window.shape), device)
        self.current = float_tensor(problem.current_mm, device)
        self.lps_to_index = float_tensor(np.linalg.inv(window.index_to_lps), device)
        region = self.weights > 0
        # The barrier's floor per voxel: FOLD_MARGIN, or lower where the current field is already lower, so
        # that the refinement is not spent on undoing compression (or folding) it did not make.
        current_det = jacobian_determinant_torch(self.current, self.lps_to_index)[region]
        self.fold_floor = torch.clamp(current_det, max=FOLD_MARGIN)
        reduction = "mean" if self.fit is None else "none"  # per voxel for a masked mean
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=7, reduction=reduction)

    @property
    def has_unfitted_pair(self) -> bool:
        """Whether the step compares artefact-matched images and also has the images as given."""
        return len(self.pair_features) > 1

    def _features(self, hu: torch.Tensor) -> list[torch.Tensor]:
        """What the similarity compares, per image pair (one channel of ``hu`` each): (1, C, ...) MIND
        descriptors (C = 12), or the network's normalised intensities (C = 1)."""
        if self.settings.presmooth_mm > 0:
            hu = GaussianFilter(3, self.settings.presmooth_mm / self.spacing).to(hu.device)(hu)
        if self.settings.similarity == "mind":
            return [mind_ssc(pair, radius=MIND_RADIUS) for pair in hu.split(1, dim=1)]
        return list(((hu + 1000.0) / 2000.0).split(1, dim=1))

    def correction_mm(self) -> torch.Tensor:
        """(1, 3, Z, Y, X) LPS mm on the window: the chosen start plus the optimised part."""
        return self.start + self._optimised_mm()

    def _optimised_mm(self) -> torch.Tensor:
        return F.interpolate(
            self.control, size=self.problem.window.shape, mode="trilinear", align_corners=True
        )

    def similarity(self, correction_mm: torch.Tensor, pair: int = 0) -> torch.Tensor:
        """The similarity term inside the box for a correction (lower is better), on one image pair (0: the
        fitted pair, -1: the last, the unfitted pair where there is one)."""
        moving, fixed = self.pair_features[pair]
        steps = torch.einsum("bczyx,cd->zyxd", correction_mm, self.problem.mm_to_index)
        warped = sample(moving, self.problem.base_index + steps)
        fixed, warped = fixed[self.box], warped[self.box]
        if self.settings.similarity == "lncc":
            return 1.0 + self._mean(self.lncc(warped, fixed))  # MONAI's LNCC is -NCC: 0 here means identical
        return self._mean((fixed - warped) ** 2)

    def _mean(self, terms: torch.Tensor) -> torch.Tensor:
        """The box's mean of per-voxel terms (B, C, Zb, Yb, Xb), inside the fit mask where there is one."""
        return torch.mean(terms) if self.fit is None else masked_mean(terms, self.fit)

    def loss(self) -> torch.Tensor:
        optimised = self._optimised_mm()
        correction = self.start + optimised
        # The penalty is on what this step optimises: a start is an earlier state's field, smooth already.
        penalty = self.diffusion(optimised / self.spacing) if self.settings.smoothness else 0.0
        return (
            self.similarity(correction)
            + self.settings.smoothness * penalty
            + FOLD_WEIGHT * self.folding(correction)
        )

    def choose_return(self) -> tuple[int, float] | None:
        """Return to the earlier state whose field the evidence prefers, where it explains at least
        ``min_gain`` of the box's remaining difference under the current field (``returns``).

        The evidence is the unfitted pair where there is one (the current field was fitted to the other),
        else the fitted pair. Returns (the state's index in ``problem.earlier_mm``, its gain), or None; the
        start becomes that state's field.
        """
        chosen = earlier_state_to_return_to(
            self.problem, lambda correction: self.similarity(correction, pair=-1), self.settings.min_gain
        )
        if chosen is None:
            return None
        self.start = chosen.correction_mm
        return chosen.index, chosen.gain

    def folding(self, correction_mm: torch.Tensor) -> torch.Tensor:
        """A barrier on det J where the correction applies: zero while det J stays above its floor."""
        refined = self.current + self.weights[..., None] * correction_mm[0].permute(1, 2, 3, 0)
        det = jacobian_determinant_torch(refined, self.lps_to_index)[self.weights > 0]
        return torch.mean(torch.relu(self.fold_floor - det) ** 2)

    def search_translation(self, reach_mm: float = SEARCH_REACH_MM) -> np.ndarray:
        """The best constant shift of the box (LPS mm), coarse grid then fine, as the refinement's start.

        Block matching catches the several-millimetre offsets a gradient step from zero misses (MIND
        sees about a dilation's worth around the optimum); shifts pay a little for their length, so a
        flat cost stays at zero.
        """
        best = np.zeros(3)
        for step in (reach_mm / 4, reach_mm / 12):
            offsets = np.arange(-4, 5) * step if step == reach_mm / 4 else np.arange(-3, 4) * step
            grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
            candidates = best + grid
            costs = self._shift_costs(candidates)
            best = candidates[int(np.argmin(costs))]
        return best

    def _shift_costs(self, shifts_mm: np.ndarray, batch: int = 64) -> np.ndarray:
        problem = self.problem
        start_steps = torch.einsum("bczyx,cd->zyxd", self.start, problem.mm_to_index)
        base = (problem.base_index + start_steps)[problem.box.slices]  # (Zb, Yb, Xb, 3)
        moving, fixed = self.pair_features[0]
        fixed = fixed[self.box]
        steps = torch.from_numpy(shifts_mm.astype(np.float32)) @ problem.mm_to_index.cpu()
        costs = []
        with torch.no_grad():
            for chunk in torch.split(steps.to(base.device), batch):
                points = base[None] + chunk[:, None, None, None, :]
                volume = moving.expand(len(chunk), *moving.shape[1:])
                warped = sample_batch(volume, points)
                squared = (warped - fixed) ** 2
                dims = (1, 2, 3, 4)
                costs.append(
                    squared.mean(dim=dims) if self.fit is None else masked_mean(squared, self.fit, dims)
                )
        penalty = SHIFT_PENALTY * (np.linalg.norm(shifts_mm, axis=1) / SEARCH_REACH_MM) ** 2
        return torch.cat(costs).cpu().numpy() * (1.0 + penalty)

    def start_at(self, shift_mm: np.ndarray) -> None:
        with torch.no_grad():
            self.control[:] = torch.as_tensor(shift_mm, dtype=self.control.dtype).view(1, 3, 1, 1, 1)

    def run(
        self, iterations: int, progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[float]:
        optimizer = torch.optim.Adam([self.control], lr=self.settings.step_mm)
        return run_iterations(optimizer, self.loss, iterations, Feedback("rso", progress, cancel))
