"""The general model fine-tuned on four patients and on phases of a console's length: one candidate against
the bundled model, scored on the held-out patient only (bench/sweep/general-model-anatomy/plan.md).

Step 3 of ``make model`` (``scripts/build_demo_model.py``) again from the same image-loss model, on the twelve
cases it had (``TWO_PATIENT_CASES`` and ``STANDARD_CASES``) plus ``FOUR_PATIENT_CASES``: the two chest crops
(real CT the model had never seen) and every training anatomy as a console writes its phases (``-vendor``
presets). Then the general-model TRE of the baseline (the model bundled before, ``--baseline``) and of the
candidate on lung2's pairs: the model card's standard pairs, the scanner check, and the ``-vendor`` presets.
The candidate is what ``make model`` now bundles.

    python scripts/general_model_anatomy_study.py --thorax DIR_WITH_CHEST_CROPS \\
        --images-model IMAGES.pt --baseline BEFORE.pt --out bench/sweep/general-model-anatomy/study.json

IMAGES.pt is step 2's model, ``git show 66602f5:RSORegistration/rso/resources/general_model.pt``; BEFORE.pt
the model bundled until 2026-12-07, ``git show 455885b:RSORegistration/rso/resources/general_model.pt``
(``study.json`` calls it "bundled").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_demo_model import (  # noqa: E402
    DEMO_GRID,
    FOUR_PATIENT_CASES,
    HELD_OUT_SEEDS,
    TRUTH_ITERATIONS,
    TRUTH_LEARNING_RATE,
    TWO_PATIENT_CASES,
    case_folder,
    held_out_tre,
    preset_case_folder,
    resumable_run,
    scanner_check,
    truth_cases,
)

from rso.core.paths import cases_dir  # noqa: E402
from rso.evaluation.demo import DEMO_PATIENT  # noqa: E402
from rso.training.train import train  # noqa: E402

VENDOR_PRESETS = ("xvi-vendor", "truebeam-vendor")
log = logging.getLogger("general_model_anatomy_study")


def train_candidate(images_model: Path, cases: list[Path], work: Path) -> Path:
    """Step 3's recipe on ``cases``, into ``work`` (resumable); returns the compact model."""
    compact = work / "candidate.pt"
    settings = {"iterations": TRUTH_ITERATIONS, "learning_rate": TRUTH_LEARNING_RATE}
    run = resumable_run(
        cases, work / "candidate_full.pt", compact, init=str(images_model), supervision="truth", **settings
    )
    train(run)
    return compact


def scores(model: Path, work: Path) -> dict:
    """Mean identity and general-model lung TRE (mm) of ``model`` on every held-out set, with the rows."""
    standard = held_out_tre(model, [case_folder(DEMO_PATIENT, seed) for seed in HELD_OUT_SEEDS], DEMO_GRID)
    result = {"standard": _mean(standard)}
    check = scanner_check(model, DEMO_GRID, work)
    result |= {preset: _mean(check[preset]["rows"]) for preset in check if preset != "lung_voxels"}
    for preset in VENDOR_PRESETS:
        folders = [preset_case_folder(DEMO_PATIENT, preset, seed) for seed in HELD_OUT_SEEDS]
        result[preset] = _mean(held_out_tre(model, folders, DEMO_GRID))
    return result


def _mean(rows: list[dict]) -> dict:
    return {
        "pairs": len(rows),
        "identity_tre_mm": round(float(np.mean([r["identity_tre_mm"] for r in rows])), 4),
        "general_tre_mm": round(float(np.mean([r["general_tre_mm"] for r in rows])), 4),
        "rows": rows,
    }


def study_parser(doc: str, work: str) -> argparse.ArgumentParser:
    """The arguments every study of step 3 takes: the crops, step 2's model, the baseline, work and out."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--thorax", type=Path, required=True, help="folder of chest_crop_a/b.nii.gz")
    parser.add_argument("--images-model", type=Path, required=True, help="step 2's model (compact)")
    parser.add_argument("--baseline", type=Path, required=True, help="the model to compare (compact)")
    parser.add_argument("--work", type=Path, default=cases_dir().parent / work)
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main() -> int:
    args = study_parser(__doc__, "model-anatomy").parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    cases = truth_cases(args.thorax, TWO_PATIENT_CASES + FOUR_PATIENT_CASES)
    log.info("%d training cases ready after %.0f s", len(cases), time.time() - start)
    candidate = train_candidate(args.images_model, cases, args.work)
    log.info("trained after %.0f s", time.time() - start)
    study = {"training_cases": [case.name for case in cases]}
    for name, model in (("bundled", args.baseline), ("candidate", candidate)):
        study[name] = scores(model, args.work)
    study["seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(study, indent=1) + "\n")
    sets = list(study["bundled"])
    print(f"{'held-out lung TRE (mm)':24s}" + "".join(f"{s:>17s}" for s in sets))
    for name in ("bundled", "candidate"):
        print(f"{name:24s}" + "".join(f"{study[name][s]['general_tre_mm']:17.3f}" for s in sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
