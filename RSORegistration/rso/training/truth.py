"""Training against the simulator's true fields (``train --supervision truth``; docs/model-card.md).

The paper's loss compares images; on cone-beam phases it also rewards aligning their streaks
(docs/decisions.md, "The general model on cone-beam phases"). A simulated case knows the motion itself:
``truth_0_K.nii.gz`` is the field from CBCT phase 0 (fixed) to phase K (moving). This objective is the
squared error of the predicted displacement against that field, in model-grid voxels, averaged over
the body (``body_mask.nii.gz``): air outside it carries no motion the images could show.

Pairs are 0 -> K only (the simulator writes no other truth), and are not augmented: a rotation or zoom
of the images would have to move the field's vectors too.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.losses import DiffusionLoss

from rso.core.body import framed_grid
from rso.core.imageio import read_image
from rso.core.model import normalise
from rso.errors import InputError

TRUTH_GLOB = "truth_0_*.nii.gz"
BODY_MASK = "body_mask.nii.gz"


@dataclass
class TruthCase:
    """One case on its model grid: every tensor (1, C, z, y, x) float32.

    fixed: phase 0, normalised (C = 1); body: phase 0's body mask, 0/1 (C = 1);
    moving[k], truth[k]: phase K normalised (C = 1) and the true field 0 -> K in model-grid voxels
    (C = 3: dz, dy, dx), one entry per truth file of the case.
    """

    fixed: torch.Tensor
    body: torch.Tensor
    moving: list[torch.Tensor]
    truth: list[torch.Tensor]


def load_truth_cases(folders: list[str], grid_shape) -> list[TruthCase]:
    return [_load_case(Path(folder), grid_shape) for folder in folders]


def _load_case(folder: Path, grid_shape) -> TruthCase:
    truths = sorted(folder.glob(TRUTH_GLOB), key=lambda path: _moving_phase(path))
    if not truths or not (folder / BODY_MASK).is_file():
        raise InputError(
            f"training case {folder} has no {TRUTH_GLOB} or no {BODY_MASK}: "
            "--supervision truth needs cases made by `simulate`"
        )
    fixed_image = read_image(folder / "cbct_phase0.nii.gz", "fixed training image")
    grid = framed_grid(fixed_image, grid_shape, hu=True)  # as a session frames its fixed image
    body = grid.resample(sitk.ReadImage(str(folder / BODY_MASK)), 0.0) > 0.5
    case = TruthCase(_tensor(normalise(grid.resample(fixed_image))), _tensor(body), [], [])
    for path in truths:
        moving = read_image(folder / f"cbct_phase{_moving_phase(path)}.nii.gz", "moving training image")
        case.moving.append(_tensor(normalise(grid.resample(moving))))
        field_mm = grid.resample_field(sitk.ReadImage(str(path)))
        case.truth.append(torch.from_numpy(grid.mm_to_voxels(field_mm))[None])
    return case


def _moving_phase(path: Path) -> int:
    return int(re.fullmatch(r"truth_0_(\d+)\.nii\.gz", path.name).group(1))


def _tensor(array: np.ndarray) -> torch.Tensor:
    """(z, y, x) -> (1, 1, z, y, x) float32."""
    return torch.from_numpy(np.ascontiguousarray(array, np.float32))[None, None]


class TruthPairSampler:
    """Uniformly random pairs 0 -> K over every case's truth files."""

    def __init__(self, cases: list[TruthCase], seed: int):
        self.pairs = [(case, k) for case in cases for k in range(len(case.truth))]
        self.rng = random.Random(seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fixed, moving, truth, body), shapes as in ``TruthCase``."""
        case, k = self.pairs[self.rng.randrange(len(self.pairs))]
        return case.fixed, case.moving[k], case.truth[k], case.body


def truth_loss(displacement: torch.Tensor, truth: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Mean over the body of |displacement - truth|^2 (voxels^2).

    displacement, truth: (N, 3, z, y, x) model-grid voxels; body: (N, 1, z, y, x), 0/1.
    """
    error = ((displacement - truth) ** 2).sum(dim=1, keepdim=True)
    return (error * body).sum() / body.sum().clamp(min=1.0)


class TruthLoss(torch.nn.Module):
    """``truth_loss`` + ``smoothness`` x MONAI's diffusion term of the displacement over the whole grid.

    The truth reaches only the body; the diffusion term also keeps the field smooth in the air around it,
    where nothing else constrains it (docs/decisions.md, "A smoothness term on step 3").
    """

    def __init__(self, smoothness: float):
        super().__init__()
        if smoothness < 0:
            raise InputError("the truth loss's smoothness weight must be >= 0")
        self.smoothness = smoothness
        self.diffusion = DiffusionLoss()

    def forward(self, displacement, truth, body) -> torch.Tensor:
        """displacement, truth: (N, 3, z, y, x) model-grid voxels; body: (N, 1, z, y, x), 0/1."""
        loss = truth_loss(displacement, truth, body)
        if self.smoothness == 0:
            return loss
        return loss + self.smoothness * self.diffusion(displacement)
