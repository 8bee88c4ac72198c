"""Fine-tune the general model on cone-beam cases against the simulator's true fields (#20 item 7, a study).

``fine_tune_study.py`` found that the paper's image loss on cone-beam phases teaches the network their
streaks. A loss the streaks cannot reach is the simulator's own truth: here the bundled weights are
fine-tuned on the pairs 0 -> K (K = 1..9) of the same training cases (``fine_tune_study.TUNE_CASES`` and
``STANDARD_CASES``; training anatomies only) to minimise the squared error between the predicted and the
true displacement (model-grid voxels) inside the body, without augmentation (it would have to move the
truth too), with the paper's schedule shape (x0.1 at 50 % and 75 %). Scored as the card scores the model
(``fine_tune_study.score``); the JSON holds the bundled model's numbers beside the candidate's.

    python scripts/supervised_fine_tune_study.py --out bench/sweep/general-model-scanners/supervised.json
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from build_demo_model import BUNDLED, DEMO_GRID, case_folder, preset_case_folder
from fine_tune_study import STANDARD_CASES, TUNE_CASES, score, study_arguments, work_folder, write_record

from rso.core.geometry import ModelGrid
from rso.core.imageio import read_image
from rso.core.model import load_checkpoint, normalise, save_checkpoint
from rso.training.train import LR_DROPS

log = logging.getLogger("supervised_fine_tune_study")


def case_pairs(folder: Path) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(fixed, moving, truth, body) per pair 0 -> K on the case's model grid: images (1, 1, z, y, x)
    normalised, truth (1, 3, z, y, x) model-grid voxels fixed -> moving, body (1, 1, z, y, x) 0/1."""
    fixed_image = read_image(folder / "cbct_phase0.nii.gz", "fixed")
    grid = ModelGrid.covering(fixed_image, DEMO_GRID)
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array, np.float32))[None]  # noqa: E731
    fixed = as_tensor(normalise(grid.resample(fixed_image)))[None]
    body = as_tensor(grid.resample(sitk.ReadImage(str(folder / "body_mask.nii.gz")), 0.0) > 0.5)[None]
    pairs = []
    for phase in range(1, 10):
        moving = as_tensor(
            normalise(grid.resample(read_image(folder / f"cbct_phase{phase}.nii.gz", "moving")))
        )
        truth_mm = grid.resample_field(sitk.ReadImage(str(folder / f"truth_0_{phase}.nii.gz")))
        pairs.append((fixed, moving[None], as_tensor(grid.mm_to_voxels(truth_mm)), body))
    return pairs


def fine_tune(iterations: int, lr: float, out: Path) -> Path:
    folders = [preset_case_folder(*case) for case in TUNE_CASES]
    folders += [case_folder(name, seed) for name, seed in STANDARD_CASES]
    pairs = [pair for folder in folders for pair in case_pairs(folder)]
    net, _ = load_checkpoint(BUNDLED)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    rng, start, curve = random.Random(0), time.perf_counter(), []
    torch.manual_seed(0)
    for step in range(iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.1 ** sum(step >= f * iterations for f in LR_DROPS)
        fixed, moving, truth, body = pairs[rng.randrange(len(pairs))]
        optimizer.zero_grad(set_to_none=True)
        error = ((net(fixed, moving) - truth) ** 2).sum(dim=1, keepdim=True)
        loss = (error * body).sum() / body.sum()
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
        if (step + 1) % 250 == 0:
            log.info(
                "step %d: mean loss of the last 250 %.4f voxels^2, %.0f s",
                step + 1,
                np.mean(curve[-250:]),
                time.perf_counter() - start,
            )
    save_checkpoint(net, out, dtype=torch.float16, step=iterations)
    out.with_suffix(".csv").write_text("".join(f"{i + 1},{v}\n" for i, v in enumerate(curve)))
    return out


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    work = work_folder(args)
    candidate = work / f"supervised_lr{args.lr:g}.pt"
    if not candidate.is_file():
        fine_tune(args.iterations, args.lr, candidate)
    record = {"iterations": args.iterations, "lr": args.lr, "bundled": score(BUNDLED, work)}
    record["supervised"] = score(candidate, work)
    write_record(record, args.out)


if __name__ == "__main__":
    main()
