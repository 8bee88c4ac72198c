"""Can the general model see through the half-fan streaks in a box? (#20; a study, no default changed)

On TrueBeam-like (half-fan) FDK phases native RSO declines every misaligned box: the images' own
similarity cannot find the true correction there (docs/decisions.md, "Why native RSO declines on
TrueBeam-like scans"). The general model was fine-tuned against the simulator's true motion and is
not driven by that similarity, so it might. For each box (two misaligned, one residual, two control,
40 mm, picked on the general model's field), the model runs again on windows of its own grid's size
and spacing centred on the box, and on eight more shifted by ``SHIFT_MM`` along each axis
(test-time shifts): fixed against the moving image warped by the general model's field, each
window's prediction resampled onto the centred one's grid. The box's correction is their mean, and
their spread is a truth-free measure of the model's own certainty. One JSON line per box: the box's
TRE (mm, lungs in the box) before and after the mean correction, its size and the spread.

    python scripts/box_network_study.py --case DIR ... --out bench/sweep/box-network/training.jsonl
    python scripts/box_network_study.py --summary bench/sweep/box-network/training.jsonl

Training anatomies only (cxr, lung1, chest_crop_a/b); lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402

from rso.core.geometry import ModelGrid  # noqa: E402
from rso.core.optimize import predict  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

BOXES = (("misaligned", 2), ("residual", 1), ("control", 2))
SHIFT_MM = 16.0
log = logging.getLogger("box_network_study")


def centred_grid(grid: ModelGrid, centre_lps: np.ndarray) -> ModelGrid:
    """The model grid's shape, spacing and direction, centred on an LPS point (mm)."""
    half_xyz = (np.array(grid.shape[::-1]) - 1) / 2
    origin = centre_lps - grid.index_to_lps @ half_xyz
    return ModelGrid(grid.shape, grid.spacing, tuple(origin.tolist()), grid.direction)


def window_prediction(session, start: sitk.Image, window: ModelGrid) -> np.ndarray:
    """The model's correction (z, y, x, 3) LPS mm on ``window``: fixed against the moving image warped by
    ``start`` (an LPS-mm displacement field image, fixed -> moving)."""
    pair, reference = session.pair, window.reference_image()
    field = sitk.Resample(start, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    warp = sitk.DisplacementFieldTransform(field)
    warped = sitk.Resample(pair.moving, reference, warp, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    fixed = pair.network_tensor(window.resample(pair.fixed), pair.normalisation.fixed)
    moving = pair.network_tensor(sitk.GetArrayFromImage(warped), pair.normalisation.moving)
    with torch.no_grad():
        return window.voxels_to_mm(predict(session.net, fixed, moving)[0].cpu().numpy())


def score_box(session, start: sitk.Image, kind: str, box) -> dict:
    centre = (np.array(box.lps_min) + np.array(box.lps_max)) / 2
    grid = centred_grid(session.grid, centre)
    shifts = [np.zeros(3)] + [np.array(s) * SHIFT_MM for s in itertools.product((-1, 1), repeat=3)]
    predictions = []
    for shift in shifts:
        window = centred_grid(session.grid, centre + shift)
        predictions.append(grid.resample_field(window.field_image(window_prediction(session, start, window))))
    predictions = np.stack(predictions)
    correction = predictions.mean(0)
    pair = session.pair
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    points = grid.index_to_lps_points(index)
    in_box = np.all((points >= np.array(box.lps_min)) & (points <= np.array(box.lps_max)), -1)
    scored = in_box & (grid.resample(pair.mask, default=0) > 0.5)
    before = grid.resample_field(start)
    truth = grid.resample_field(pair.truth)
    box_means = predictions[:, in_box].mean(1)
    mean = correction[in_box].mean(0)
    return {
        "kind": kind,
        "ras": box.ras_corners,
        "tre_before": float(np.linalg.norm(before - truth, axis=-1)[scored].mean()),
        "tre_after": float(np.linalg.norm(before + correction - truth, axis=-1)[scored].mean()),
        "mean_correction_mm": float(np.linalg.norm(mean)),
        "spread_mm": float(np.sqrt(((box_means - mean) ** 2).sum(-1).mean())),
    }


def study(cases: list[str], out: Path) -> None:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for spec in cases:
            folder, phase = case_spec(spec)
            session = start_session(engine, case_inputs(folder, phase), network=network)
            session.general()
            start = session.grid.field_image(session.field_mm)
            for kind, count in BOXES:
                for box in pick_boxes(session, kind, count, 40.0):
                    row = {"case": folder.name, **score_box(session, start, kind, box)}
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    log.info("%s %s %.2f -> %.2f", folder.name, kind, row["tre_before"], row["tre_after"])


def summary(path: Path) -> None:
    """Per scanner and box kind: the median change of the box's TRE, boxes better / worse by > 0.5 mm, the
    worst change;
    then the same for the boxes whose mean correction is at least ``k`` times the shifts' spread."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for ratio in (0.0, 2.0, 3.0, 4.0):
        print(f"corrections kept where mean / spread >= {ratio}")
        for preset, kind in itertools.product(("xvi", "truebeam"), ("misaligned", "residual", "control")):
            chosen = [r for r in rows if f"-{preset}-" in r["case"] and r["kind"] == kind]
            after = [_after(r, ratio) for r in chosen]
            change = np.array(after) - [r["tre_before"] for r in chosen]
            print(
                f"  {preset:8s} {kind:10s} {len(chosen):2d} boxes: "
                f"median change {np.median(change):+.2f} mm, "
                f"better {int((change < -0.5).sum())}, worse {int((change > 0.5).sum())} (by > 0.5 mm), "
                f"worst {change.max():+.2f}"
            )


def _after(row: dict, ratio: float) -> float:
    kept = row["mean_correction_mm"] >= ratio * row["spread_mm"]
    return row["tre_after"] if kept else row["tre_before"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="case folder[:moving phase]")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    study(args.case, args.out)


if __name__ == "__main__":
    main()
