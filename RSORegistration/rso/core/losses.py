"""Cost functions: image similarity (optionally inside a box, paper eq. 6) plus smoothness."""

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
    """similarity(fixed, warped) over ``region`` (whole image if None) + weight * smoothness(field)."""

    def __init__(self, config: LossConfig = LossConfig()):
        super().__init__()
        self.config = config
        self.smoothness = DiffusionLoss() if config.regularizer == "diffusion" else BendingEnergyLoss()
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=LNCC_KERNEL)

    def forward(self, fixed, warped, displacement, region: tuple[slice, ...] | None = None) -> torch.Tensor:
        if region is not None:
            fixed, warped = fixed[(..., *region)], warped[(..., *region)]
        if self.config.similarity == "mse":
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
