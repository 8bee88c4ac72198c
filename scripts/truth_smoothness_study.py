"""A smoothness term on step 3 of the general model: two weights against the bundled model, chosen on
training anatomies at a fresh seed, then the choice scored on the held-out patient
(bench/sweep/truth-smoothness/plan.md).

Step 3 of ``make model`` (``scripts/build_demo_model.py``) again from the same image-loss model and on the
same cases, its loss plus ``w`` times MONAI's diffusion term (``train --supervision truth --smoothness W``).

    python scripts/truth_smoothness_study.py --thorax DIR_WITH_CHEST_CROPS --images-model IMAGES.pt \\
        --baseline BUNDLED.pt --out bench/sweep/truth-smoothness/study.json

IMAGES.pt is step 2's model, ``git show 66602f5:RSORegistration/rso/resources/general_model.pt``; BUNDLED.pt
the model bundled on 2026-12-07, ``git show a178931:RSORegistration/rso/resources/general_model.pt``.
"""

from __future__ import annotations

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
    FINE_TUNE_CASES,
    TRUTH_ITERATIONS,
    TRUTH_LEARNING_RATE,
    case_folder,
    held_out_tre,
    preset_case_folder,
    resumable_run,
    truth_cases,
)
from general_model_anatomy_study import scores, study_parser  # noqa: E402

from rso.training.train import train  # noqa: E402

WEIGHTS = (0.1, 1.0)  # fixed in the plan
VALIDATION_SEED = 127  # a fresh training seed
VALIDATION = {
    "xvi-vendor": ("cxr", "lung1", "chest_crop_a", "chest_crop_b"),
    "truebeam-vendor": ("cxr", "chest_crop_a"),
    "standard": ("cxr", "lung1"),
}
TRE_MARGIN_MM = 0.05
NEAR_STILL_MM = 1.0  # identity TRE under this: the pairs that barely move
log = logging.getLogger("truth_smoothness_study")


def train_candidate(images_model: Path, weight: float, cases: list[Path], work: Path) -> Path:
    """Step 3's recipe plus the diffusion term at ``weight``, into ``work`` (resumable)."""
    folder = work / f"w{weight:g}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"iterations": TRUTH_ITERATIONS, "learning_rate": TRUTH_LEARNING_RATE}
    compact = folder / "candidate.pt"
    run = resumable_run(
        cases,
        folder / "candidate_full.pt",
        compact,
        init=str(images_model),
        supervision="truth",
        truth_smoothness=weight,
        **settings,
    )
    train(run)
    return compact


def validation_folders(thorax: Path) -> dict[str, list[Path]]:
    folders = {}
    for preset, names in VALIDATION.items():
        if preset == "standard":
            folders[preset] = [case_folder(name, VALIDATION_SEED) for name in names]
        else:
            folders[preset] = [preset_case_folder(n, preset, VALIDATION_SEED, thorax) for n in names]
    return folders


def validate(model: Path, folders: dict[str, list[Path]]) -> dict:
    """Per set: mean lung TRE, the near-still pairs' mean, mean and worst folding fraction, the rows."""
    result = {}
    for preset, cases in folders.items():
        rows = held_out_tre(model, cases, DEMO_GRID)
        still = [r["general_tre_mm"] for r in rows if r["identity_tre_mm"] < NEAR_STILL_MM]
        folding = [r["general_folding_fraction"] for r in rows]
        result[preset] = {
            "pairs": len(rows),
            "identity_tre_mm": round(float(np.mean([r["identity_tre_mm"] for r in rows])), 4),
            "general_tre_mm": round(float(np.mean([r["general_tre_mm"] for r in rows])), 4),
            "near_still_pairs": len(still),
            "near_still_tre_mm": round(float(np.mean(still)), 4) if still else None,
            "folding_mean": float(np.mean(folding)),
            "folding_worst": float(np.max(folding)),
            "rows": rows,
        }
    return result


def choose(study: dict) -> str | None:
    """The plan's rule: within TRE_MARGIN_MM of the baseline on every set, then the least worst folding,
    if at most half the baseline's."""
    baseline = study["validation"]["baseline"]

    def worst_folding(scores: dict) -> float:
        return max(s["folding_worst"] for s in scores.values())

    qualifying = [
        name
        for name, scores in study["validation"].items()
        if name != "baseline"
        and all(scores[s]["general_tre_mm"] <= baseline[s]["general_tre_mm"] + TRE_MARGIN_MM for s in scores)
    ]
    if not qualifying:
        return None
    best = min(qualifying, key=lambda name: worst_folding(study["validation"][name]))
    return best if worst_folding(study["validation"][best]) <= 0.5 * worst_folding(baseline) else None


def print_table(study: dict) -> None:
    sets = list(VALIDATION)
    print(f"{'validation (seed 127)':22s}" + "".join(f"{s:>34s}" for s in sets))
    print(f"{'':22s}" + "".join(f"{'TRE / near-still / worst fold %':>34s}" for _ in sets))
    for name, result in study["validation"].items():
        cells = [
            f"{result[s]['general_tre_mm']:.3f} / {result[s]['near_still_tre_mm'] or float('nan'):.3f} / "
            f"{100 * result[s]['folding_worst']:.3f}"
            for s in sets
        ]
        print(f"{name:22s}" + "".join(f"{c:>34s}" for c in cells))
    print("chosen:", study["chosen"])
    if "held_out" in study:
        held = study["held_out"]
        names = list(held["baseline"])
        print(f"{'held-out lung TRE (mm)':22s}" + "".join(f"{s:>17s}" for s in names))
        for name in held:
            print(f"{name:22s}" + "".join(f"{held[name][s]['general_tre_mm']:17.3f}" for s in names))


def main() -> int:
    parser = study_parser(__doc__, "truth-smoothness")
    parser.add_argument("--train-only", action="store_true", help="train the candidates, score nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    start = time.time()
    cases = truth_cases(args.thorax, FINE_TUNE_CASES)
    models = {f"w={w:g}": train_candidate(args.images_model, w, cases, args.work) for w in WEIGHTS}
    log.info("candidates trained after %.0f s", time.time() - start)
    if args.train_only:
        return 0
    folders = validation_folders(args.thorax)
    study = {
        "weights": list(WEIGHTS),
        "validation_cases": {k: [f.name for f in v] for k, v in folders.items()},
    }
    study["validation"] = {
        name: validate(m, folders) for name, m in {"baseline": args.baseline, **models}.items()
    }
    study["chosen"] = choose(study)
    if study["chosen"]:
        log.info("chose %s; scoring it on the held-out patient", study["chosen"])
        chosen = models[study["chosen"]]
        study["held_out"] = {
            name: scores(m, args.work) for name, m in (("baseline", args.baseline), (study["chosen"], chosen))
        }
    study["seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(study, indent=1) + "\n")
    print_table(study)
    return 0


if __name__ == "__main__":
    sys.exit(main())
