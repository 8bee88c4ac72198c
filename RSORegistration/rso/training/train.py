"""Training the general model (paper Tables 2-3), on one process or under torchrun with DDP.

Each iteration draws a random case and two different CBCT phases as fixed and moving, applies
the same random rotation (+-0.01, +-0.01, +-0.05 rad about x, y, z) and zoom (0.9-1.1) to both,
normalises, and takes one Adam step (3e-4, x0.1 at 50 % and 75 % of the iterations).
With ``supervision="truth"`` the pairs are 0 -> K of simulated cases, and the loss is the squared error
against the simulator's true field (rso.training.truth).

``torchrun --nproc_per_node=K -m rso.train ...`` runs the same code with DistributedDataParallel
(gloo on CPU, nccl on GPUs): each rank draws its own pairs and the gradients are averaged.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rso.core.body import framed_grid
from rso.core.geometry import check_grid_shape
from rso.core.imageio import read_image
from rso.core.losses import LossConfig, RegistrationLoss
from rso.core.model import (
    ModelConfig,
    RegistrationNet,
    load_checkpoint,
    normalise,
    resolve_device,
    save_checkpoint,
)
from rso.core.optimize import PAPER_LEARNING_RATE
from rso.errors import InputError
from rso.options import DEFAULT_TRUTH_SMOOTHNESS, SUPERVISIONS
from rso.training.truth import TruthLoss, TruthPairSampler, load_truth_cases

log = logging.getLogger(__name__)

ROTATION_RAD_XYZ = (0.01, 0.01, 0.05)  # paper Table 2
ZOOM_RANGE = (0.9, 1.1)
LR_DROPS = (0.5, 0.75)  # fractions of the run at which the learning rate drops x0.1 (Table 3)


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    iterations: int
    grid: tuple[int, int, int]
    channels: tuple[int, ...] = ModelConfig().channels
    learning_rate: float = PAPER_LEARNING_RATE
    loss: LossConfig = LossConfig()
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    resume: bool = False
    checkpoint_every: int = 200
    image_glob: str = "cbct_phase*.nii.gz"
    compact: str | None = None
    init: str | None = None  # start from this model's weights (fine-tuning); a fresh schedule and optimizer
    progress: bool = True  # a tqdm bar on rank 0 (the command line turns it off when quiet or piped)
    supervision: str = SUPERVISIONS[0]  # "images": the paper's loss; "truth": the simulator's fields
    truth_smoothness: float = DEFAULT_TRUTH_SMOOTHNESS  # with "truth": the diffusion term's weight


def learning_rate_at(step: int, config: TrainConfig) -> float:
    drops = sum(step >= fraction * config.iterations for fraction in LR_DROPS)
    return config.learning_rate * 0.1**drops


def load_cases(folders: list[str], grid_shape, pattern: str) -> list[np.ndarray]:
    """Each case as an array (phases, z, y, x) of normalised intensities on its own model grid."""
    cases = []
    for folder in folders:
        paths = sorted(Path(folder).glob(pattern))
        if len(paths) < 2:
            raise InputError(f"training case {folder} has fewer than 2 images matching {pattern}")
        images = [read_image(p, "training image") for p in paths]
        grid = framed_grid(images[0], grid_shape, hu=True)  # as a session frames its fixed image
        cases.append(np.stack([normalise(grid.resample(image)) for image in images]).astype(np.float32))
    return cases


class PairSampler:
    """Random (fixed, moving) pairs with the paper's joint rotation and zoom augmentation."""

    def __init__(self, cases: list[np.ndarray], seed: int):
        from monai.transforms import Compose, RandRotate, RandZoom

        self.cases = cases
        self.rng = random.Random(seed)
        # MONAI's range_x rotates in the plane of array axes 0 and 1 (z, y), i.e. about x.
        self.augment = Compose(
            [
                RandRotate(
                    range_x=ROTATION_RAD_XYZ[0],
                    range_y=ROTATION_RAD_XYZ[1],
                    range_z=ROTATION_RAD_XYZ[2],
                    prob=1.0,
                    keep_size=True,
                    padding_mode="zeros",
                ),
                RandZoom(
                    prob=1.0,
                    min_zoom=ZOOM_RANGE[0],
                    max_zoom=ZOOM_RANGE[1],
                    keep_size=True,
                    padding_mode="constant",
                ),
            ]
        )
        self.augment.set_random_state(seed=seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.cases[self.rng.randrange(len(self.cases))]
        fixed_index, moving_index = self.rng.sample(range(len(case)), 2)
        pair = torch.as_tensor(np.stack([case[fixed_index], case[moving_index]]))
        pair = torch.as_tensor(self.augment(pair)).float()
        return pair[0:1][None], pair[1:2][None]


def train(config: TrainConfig) -> Path:
    rank, world = _start_distributed()
    device = _rank_device(config.device, rank)
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    grid = check_grid_shape(config.grid)
    net, step, optimizer_state = _initial_model(config, grid)
    net.to(device)
    precision = net.set_precision(config.precision, device)
    log.info("training on %s with %s arithmetic, %d process(es)", device, precision, world)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    sampler = _sampler(config, grid, seed=config.seed + 1000 * (rank + 1) + step)
    loss_fn = _loss(config).to(device)
    writer = _LossLog(Path(config.out).with_suffix(".csv"), resume=config.resume) if rank == 0 else None
    bar = _progress_bar(rank, config.iterations, step) if config.progress else None
    start, first = time.perf_counter(), step
    while step < config.iterations:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        optimizer.zero_grad(set_to_none=True)
        loss = _pair_loss(model, net, loss_fn, [t.to(device) for t in sampler.sample()])
        loss.backward()
        optimizer.step()
        step += 1
        value = float(loss.detach())  # float() of a tensor that needs grad warns on every step
        if writer:
            writer.add(step, value, optimizer.param_groups[0]["lr"], time.perf_counter() - start)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.5f}")
        if step % config.checkpoint_every == 0 or step == config.iterations:
            _checkpoint(net, optimizer, step, config, rank, world)
            if rank == 0 and not bar:  # quiet or piped: a line per checkpoint instead of the bar
                seconds_per_step = (time.perf_counter() - start) / (step - first)
                _log_progress(step, config.iterations, value, seconds_per_step)
    if bar:
        bar.close()
    _stop_distributed(world)
    return Path(config.out)


def _sampler(config: TrainConfig, grid, seed: int) -> PairSampler | TruthPairSampler:
    if config.supervision not in SUPERVISIONS:
        raise InputError(f"supervision must be one of {', '.join(SUPERVISIONS)}, not {config.supervision!r}")
    if config.supervision == "truth":
        return TruthPairSampler(load_truth_cases(config.data, grid), seed)
    return PairSampler(load_cases(config.data, grid, config.image_glob), seed)


def _loss(config: TrainConfig) -> torch.nn.Module:
    if config.supervision == "truth":
        return TruthLoss(config.truth_smoothness)
    return RegistrationLoss(config.loss)


def _pair_loss(model, net: RegistrationNet, loss_fn, batch: list[torch.Tensor]) -> torch.Tensor:
    """One pair's loss: (fixed, moving) under the paper's image loss, or (fixed, moving, truth, body)
    against the true field (shapes in rso.training.truth.TruthCase)."""
    fixed, moving, *truth = batch
    displacement = model(fixed, moving)
    if truth:
        return loss_fn(displacement, *truth)
    return loss_fn(fixed, net.warp(moving, displacement), displacement)


def _log_progress(step: int, iterations: int, loss: float, seconds_per_step: float) -> None:
    left = seconds_per_step * (iterations - step)
    log.info(
        "step %d of %d: loss %.5f, %.2f s per step, about %.0f s left",
        step,
        iterations,
        loss,
        seconds_per_step,
        left,
    )


def _initial_model(config: TrainConfig, grid) -> tuple[RegistrationNet, int, dict | None]:
    if config.resume and Path(config.out).is_file():
        net, payload = load_checkpoint(config.out)
        log.info("resuming %s at step %d", config.out, payload.get("step", 0))
        return net, int(payload.get("step", 0)), payload.get("optimizer")
    if config.init:
        net, _ = load_checkpoint(config.init)
        if net.config.grid != tuple(grid) or net.config.channels != tuple(config.channels):
            raise InputError(
                f"--init model {Path(config.init).name} has grid {list(net.config.grid)} and channels "
                f"{list(net.config.channels)}; the run asks for {list(grid)} and {list(config.channels)}"
            )
        log.info("starting from the weights of %s", config.init)
        return net, 0, None
    return RegistrationNet(ModelConfig(channels=tuple(config.channels), grid=grid)), 0, None


def _checkpoint(net, optimizer, step: int, config: TrainConfig, rank: int, world: int) -> None:
    checksums = _gather_weight_checksums(net, world)
    if rank != 0:
        return
    training = {
        "iterations": config.iterations,
        "data": [str(d) for d in config.data],
        "seed": config.seed,
        "world_size": world,
        "rank_weight_checksums": checksums,
        "learning_rate": config.learning_rate,
        "init": config.init,
        "supervision": config.supervision,
    }
    if config.supervision == "truth":
        training["truth_smoothness"] = config.truth_smoothness
    save_checkpoint(net, config.out, optimizer=optimizer.state_dict(), step=step, training=training)
    if config.compact and step == config.iterations:
        save_checkpoint(net, config.compact, dtype=torch.float16, step=step, training=training)
        log.info(
            "wrote compact model %s (%.1f MB)", config.compact, Path(config.compact).stat().st_size / 1e6
        )


def _gather_weight_checksums(net, world: int) -> list[float]:
    """Every rank's sum of weights: DDP keeps them identical, and the checkpoint records that it did."""
    local = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1).cpu()
    if world == 1:
        return [float(local)]
    gathered = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    return [float(t) for t in gathered]


def _start_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), world


def _stop_distributed(world: int) -> None:
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _rank_device(name: str, rank: int) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return device


def _progress_bar(rank: int, total: int, done: int):
    if rank != 0 or os.environ.get("RSO_NO_PROGRESS"):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="train", unit="it")


class _LossLog:
    """CSV of the training curve, appended as training goes (a crash keeps what was logged)."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        new = not (resume and path.exists())
        self.handle = path.open("w" if new else "a", newline="")
        self.csv = csv.writer(self.handle)
        if new:
            self.csv.writerow(["iteration", "loss", "learning_rate", "seconds"])

    def add(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self.csv.writerow([step, f"{loss:.6g}", f"{lr:.3g}", f"{seconds:.1f}"])
        self.handle.flush()
