"""Fine-tune the bundled general model on cone-beam cases and score it held out (#20, item 7).

The model card's scanner check (``build_demo_model.py --scanner-check``) found the general model's
lung TRE on TrueBeam-like phases of the demo patient above its TRE on parallel-beam ones. This script
tries the issue's remedy, retraining on cone-beam cases: the bundled weights fine-tuned for
``--iterations`` at each ``--lr`` on cases of the training anatomies only (cxr, lung1: both cone-beam
presets and the parallel-beam ``clinical`` preset, two fresh seeds each, and two of the model's own
standard cases against forgetting), then scored as the card scores the bundled model: the scanner
check (lung2, seeds 0 and 1, three projectors) and the card's standard held-out pairs. Writes one JSON
with the bundled model's numbers beside each candidate's. Resumable: cases and candidates are reused.

    python scripts/fine_tune_study.py --lr 3e-4 --lr 3e-5 --out bench/sweep/general-model-scanners/study.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from build_demo_model import (
    BUNDLED,
    DEMO_GRID,
    DEMO_PATIENT,
    HELD_OUT_SEEDS,
    SCANNER_CHECK_PRESETS,
    case_folder,
    held_out_tre,
    preset_case_folder,
    scanner_check,
)

from rso.core.paths import data_dir
from rso.training.train import TrainConfig, train

# (anatomy, preset, seed), in the order the run of 2026-12-05 gave them to the sampler
TUNE_CASES = (
    ("cxr", "xvi", 33),
    ("lung1", "truebeam", 33),
    ("cxr", "truebeam", 34),
    ("lung1", "xvi", 34),
    ("cxr", "clinical", 33),
    ("lung1", "clinical", 34),
    ("cxr", "truebeam", 33),
    ("lung1", "xvi", 33),
    ("cxr", "xvi", 34),
    ("lung1", "truebeam", 34),
)
STANDARD_CASES = (("cxr", 1), ("lung1", 1))  # the model's own training cases


def score(model: Path, work: Path) -> dict:
    """The card's two held-out measures of ``model``: mean general-model TRE (mm) per projector."""
    check = scanner_check(model, DEMO_GRID, work)
    standard = held_out_tre(model, [case_folder(DEMO_PATIENT, seed) for seed in HELD_OUT_SEEDS], DEMO_GRID)
    means = {preset: check[preset]["general_tre_mm"] for preset in SCANNER_CHECK_PRESETS}
    means["standard"] = float(np.mean([row["general_tre_mm"] for row in standard]))
    return {"general_tre_mm": means, "scanner_check": check, "standard_rows": standard}


def fine_tune(lr: float, iterations: int, work: Path) -> Path:
    """The bundled model fine-tuned at ``lr`` (compact weights; reused when already there)."""
    compact = work / f"candidate_lr{lr:g}.pt"
    if not compact.is_file():
        data = [preset_case_folder(*case) for case in TUNE_CASES]
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
            init=str(BUNDLED),
            progress=False,
        )
        train(config)
    return compact


def study_arguments(doc: str) -> argparse.ArgumentParser:
    """The options both fine-tuning studies share: --iterations, --work, --out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--work", default=str(data_dir().parent / "model-build" / "fine-tune"))
    parser.add_argument("--out", required=True)
    return parser


def work_folder(args) -> Path:
    """Logging, two threads and the work folder, as both studies start."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return work


def write_record(record: dict, out: str) -> None:
    """The study's JSON, and each model's mean TRE per projector on the terminal."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=1) + "\n")
    for name, result in record.items():
        if isinstance(result, dict):
            print(name, {key: round(value, 2) for key, value in result["general_tre_mm"].items()})


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--lr", type=float, action="append", required=True, help="repeatable")
    args = parser.parse_args()
    work = work_folder(args)
    record = {
        "iterations": args.iterations,
        "cases": [list(case) for case in TUNE_CASES],
        "bundled": score(BUNDLED, work),
    }
    for lr in args.lr:
        record[f"lr{lr:g}"] = score(fine_tune(lr, args.iterations, work), work)
    write_record(record, args.out)


if __name__ == "__main__":
    main()
