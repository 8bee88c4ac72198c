"""``train``: the general model on simulated cases (paper Tables 2-3); ``torchrun ... -m rso.cli.train``
for DDP."""

from __future__ import annotations

import sys

from rso.cli.common import whole_numbers
from rso.errors import InputError
from rso.options import (
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    DEFAULT_SMOOTHNESS,
    DEFAULT_TRUTH_SMOOTHNESS,
    DEVICES,
    PAPER_LEARNING_RATE,
    PRECISIONS,
    SUPERVISIONS,
)


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train the general model on simulated cases (paper Tables 2-3)"
    )
    parser.add_argument("--data", nargs="+", required=True, help="case folders (from `simulate`)")
    parser.add_argument("--out", required=True, help="checkpoint to write (and resume from)")
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument(
        "--grid", required=True, type=whole_numbers, help="Z,Y,X model grid (multiples of 16)"
    )
    parser.add_argument("--channels", type=whole_numbers, default=(16, 32, 64, 128, 256))
    parser.add_argument("--lr", type=float, default=PAPER_LEARNING_RATE)
    parser.add_argument(
        "--smoothness",
        type=float,
        help="the diffusion term's weight on the displacement in voxels (default "
        f"{DEFAULT_SMOOTHNESS} with images, {DEFAULT_TRUTH_SMOOTHNESS} with truth supervision)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE)
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="fp32 (default for training) or bf16"
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument(
        "--init",
        metavar="MODEL",
        help="start from this model's weights (e.g. the bundled one, to fine-tune on new scans); "
        "its grid and channels must be the run's",
    )
    parser.add_argument(
        "--supervision",
        choices=SUPERVISIONS,
        default=SUPERVISIONS[0],
        help="images: the paper's loss on two phases' images (any case); truth: the squared error against "
        "the true field 0 -> K of cases made by `simulate` (docs/model-card.md)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--compact", help="also write fp16 weights without optimizer state here at the end")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from rso.core.losses import LossConfig
    from rso.training.train import TrainConfig, train

    if args.iterations < 1:
        raise InputError("--iterations must be >= 1")
    truth = args.supervision == "truth"
    smoothness = args.smoothness
    if smoothness is None:
        smoothness = DEFAULT_TRUTH_SMOOTHNESS if truth else DEFAULT_SMOOTHNESS
    if smoothness < 0:
        raise InputError("--smoothness must be >= 0")
    config = TrainConfig(
        data=args.data,
        out=args.out,
        iterations=args.iterations,
        grid=args.grid,
        channels=args.channels,
        learning_rate=args.lr,
        loss=LossConfig() if truth else LossConfig(smoothness_weight=smoothness),
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        compact=args.compact,
        init=args.init,
        supervision=args.supervision,
        truth_smoothness=smoothness if truth else DEFAULT_TRUTH_SMOOTHNESS,
        progress=not args.quiet and sys.stderr.isatty(),  # a bar in a log file is noise: log lines only
    )
    train(config)
    return 0


if __name__ == "__main__":  # torchrun --nproc_per_node=K -m rso.cli.train ...
    from rso.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
