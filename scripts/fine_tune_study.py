"""Fine-tune the image-loss general model on cone-beam cases with the paper's image loss (#20, item 7).

The model card's scanner check (``build_demo_model.py --scanner-check``) found the image-loss model's
lung TRE on TrueBeam-like phases of the demo patient above its TRE on parallel-beam ones. This script
tries the issue's remedy, retraining on cone-beam cases with the loss the model was trained with:
``--base`` fine-tuned for ``--iterations`` at each ``--lr`` on ``build_demo_model.FINE_TUNE_CASES`` and
``STANDARD_CASES`` (training anatomies only), then scored as the card scores a model: the scanner
check (lung2, seeds 0 and 1, three projectors) and the card's standard held-out pairs. Writes one JSON
with the base model's numbers beside each candidate's. Resumable: cases and candidates are reused.
Both candidates came out worse than the base (docs/decisions.md); ``make model`` fine-tunes against
the true fields instead. The study of 2026-12-05 started from the model bundled before that change:

    git show 66602f5:RSORegistration/rso/resources/general_model.pt > images_model.pt
    python scripts/fine_tune_study.py --base images_model.pt --lr 3e-4 --lr 3e-5 \
        --out bench/sweep/general-model-scanners/study.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from build_demo_model import (
    DEMO_GRID,
    DEMO_PATIENT,
    FINE_TUNE_CASES,
    HELD_OUT_SEEDS,
    SCANNER_CHECK_PRESETS,
    STANDARD_CASES,
    case_folder,
    held_out_tre,
    preset_case_folder,
    scanner_check,
)

from rso.core.paths import data_dir
from rso.training.train import TrainConfig, train


def score(model: Path, work: Path) -> dict:
    """The card's two held-out measures of ``model``: mean general-model TRE (mm) per projector."""
    check = scanner_check(model, DEMO_GRID, work)
    standard = held_out_tre(model, [case_folder(DEMO_PATIENT, seed) for seed in HELD_OUT_SEEDS], DEMO_GRID)
    means = {preset: check[preset]["general_tre_mm"] for preset in SCANNER_CHECK_PRESETS}
    means["standard"] = float(np.mean([row["general_tre_mm"] for row in standard]))
    return {"general_tre_mm": means, "scanner_check": check, "standard_rows": standard}


def fine_tune(base: Path, lr: float, iterations: int, work: Path) -> Path:
    """``base`` fine-tuned at ``lr`` (compact weights; reused when already there)."""
    compact = work / f"candidate_lr{lr:g}.pt"
    if not compact.is_file():
        data = [preset_case_folder(*case) for case in FINE_TUNE_CASES]
        data += [case_folder(name, seed) for name, seed in STANDARD_CASES]
        config = TrainConfig(
            data=[str(folder) for folder in data],
            out=str(work / f"candidate_lr{lr:g}_full.pt"),
            iterations=iterations,
            grid=DEMO_GRID,
            learning_rate=lr,
            device="cpu",
            checkpoint_every=250,
            compact=str(compact),
            init=str(base),
            progress=False,
        )
        train(config)
    return compact


def write_record(record: dict, out: str) -> None:
    """The study's JSON, and each model's mean TRE per projector on the terminal."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=1) + "\n")
    for name, result in record.items():
        if isinstance(result, dict):
            print(name, {key: round(value, 2) for key, value in result["general_tre_mm"].items()})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the model to fine-tune (compact weights)")
    parser.add_argument("--lr", type=float, action="append", required=True, help="repeatable")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--work", default=str(data_dir().parent / "model-build" / "fine-tune"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = Path(args.base)
    record = {
        "iterations": args.iterations,
        "cases": [list(case) for case in FINE_TUNE_CASES],
        "base": score(base, work),
    }
    for lr in args.lr:
        record[f"lr{lr:g}"] = score(fine_tune(base, lr, args.iterations, work), work)
    write_record(record, args.out)


if __name__ == "__main__":
    main()
