"""Cost functions: image similarity (optionally inside a box, paper eq. 6, and a fit mask) plus smoothness."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.losses import BendingEnergyLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss

from rso.core.mind import mind_ssc
from rso.errors import InputError
from rso.options import DEFAULT_SIMILARITY, DEFAULT_SMOOTHNESS, SIMILARITIES

REGULARIZERS = ("diffusion", "bending")
LNCC_KERNEL = 7
MIND_RADIUS = (
    2  # the patch MIND averages over; radius 2 resisted CBCT streaks better than 1 (bench/README.md)
)


@dataclass(frozen=True)
class LossConfig:
    similarity: str = DEFAULT_SIMILARITY
    regularizer: str = "diffusion"
    # Weight of the smoothness term on a displacement in voxels; MSE is on (HU+1000)/2000.
    smoothness_weight: float = DEFAULT_SMOOTHNESS

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise InputError(f"similarity must be one of {SIMILARITIES}, not {self.similarity!r}")
        if self.regularizer not in REGULARIZERS:
            raise InputError(f"regularizer must be one of {REGULARIZERS}, not {self.regularizer!r}")
        if self.smoothness_weight < 0:
            raise InputError("smoothness weight must be >= 0")


class RegistrationLoss(torch.nn.Module):
    """similarity(fixed, warped) over ``region`` (whole image if None) and inside the fit mask (everywhere if
    None) + weight * smoothness(field), the smoothness over the whole field.

    ``mask``: (1, 1, z, y, x) float, 1 inside the fit mask and 0 outside, on the grid of the images the
    loss is given (``on_window`` crops it with them).
    """

    def __init__(self, config: LossConfig = LossConfig(), mask: torch.Tensor | None = None):
        super().__init__()
        self.config, self.mask = config, mask
        self.smoothness = DiffusionLoss() if config.regularizer == "diffusion" else BendingEnergyLoss()
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=LNCC_KERNEL)
        # -NCC per voxel, for a masked mean (MONAI's reduction="none")
        self.lncc_map = LocalNormalizedCrossCorrelationLoss(3, kernel_size=LNCC_KERNEL, reduction="none")

    def on_window(self, window: tuple[slice, ...]) -> RegistrationLoss:
        """The loss for images cropped to ``window`` (z, y, x slices; crop and direct RSO): its mask alike."""
        return self if self.mask is None else RegistrationLoss(self.config, self.mask[(..., *window)])

    def forward(self, fixed, warped, displacement, region: tuple[slice, ...] | None = None) -> torch.Tensor:
        mask = self.mask
        if region is not None:
            fixed, warped = fixed[(..., *region)], warped[(..., *region)]
            mask = None if mask is None else mask[(..., *region)]
        if mask is not None:
            similarity = self._masked_similarity(fixed, warped, mask)
        elif self.config.similarity == "mse":
            similarity = torch.mean((fixed - warped) ** 2)
        elif (
            self.config.similarity == "mind"
        ):  # descriptors of each image as it stands (warped, not warped features)
            similarity = torch.mean(
                (mind_ssc(fixed, radius=MIND_RADIUS) - mind_ssc(warped, radius=MIND_RADIUS)) ** 2
            )
        else:
            similarity = self.lncc(warped, fixed)
        if self.config.smoothness_weight == 0:
            return similarity
        return similarity + self.config.smoothness_weight * self.smoothness(displacement)

    def _masked_similarity(self, fixed, warped, mask) -> torch.Tensor:
        """The similarity's per-voxel terms averaged inside the mask only: the images outside it are not
        fitted (the features still see them: MIND's patches and LNCC's window reach across the edge)."""
        if self.config.similarity == "mse":
            terms = (fixed - warped) ** 2
        elif self.config.similarity == "mind":
            terms = (mind_ssc(fixed, radius=MIND_RADIUS) - mind_ssc(warped, radius=MIND_RADIUS)) ** 2
        else:
            terms = self.lncc_map(warped, fixed)
        return masked_mean(terms, mask)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """The mean of ``values`` (B, C, z, y, x) weighted by ``mask`` (broadcast to it: 1 inside, 0 outside),
    over every axis (``dim`` None) or over ``dim``; 0 where the mask is empty there. Summed in fp32: bf16
    sums of ~10^5 voxels lose digits."""
    values = values.float()
    weights = mask.to(values.dtype).expand_as(values)
    total = (values * weights).sum() if dim is None else (values * weights).sum(dim=dim)
    count = weights.sum() if dim is None else weights.sum(dim=dim)
    return total / count.clamp_min(1.0)
