"""What could tell a real correction from a streak-driven one, without the truth (issue: RSO in mm).

For every box of the training cases (the sweep's cases and cached ISO-100 sessions, plus more
clinical-preset cases: that is where the guard's gain fails), native RSO runs at the frozen
setting with the guard off; its correction is then scored by candidate no-harm statistics, each a
gain ``1 - cost(c) / cost(0)`` in the box under another view of the images:

* ``mind2``: the step's own similarity (MIND-SSC, 2 mm pre-smoothing, artefact-matched images);
* ``mind4`` / ``mind6``: the same after 4 / 6 mm pre-smoothing (streaks are thin lines, anatomy
  coarser);
* ``raw``: MIND 2 mm on the unmatched images; ``lncc`` / ``mse``: other similarities, matched;

and by the correction's shape (mean vector, its superior-inferior share). One JSON line per box with
the box TRE before and after, so that a rule can be chosen here and checked on lung2 afterwards.

    python scripts/guard_study.py --out bench/sweep/guard/runs.jsonl

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_rso import BOXES, CASES, MORE_CLINICAL_CASES, case_folder, iso_session, sessions_dir  # noqa: E402

from rso.core.native import Refinement, axis_share, build_problem, correction_tensor, window_grid  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.options import (  # noqa: E402
    DEFAULT_RSO_CONTROL_SPACING_MM,
    DEFAULT_RSO_SMOOTHNESS,
    DEFAULT_RSO_STEP_MM,
)
from rso.settings import RSOSettings  # noqa: E402

VIEWS = {
    "mind2": ("mind", 2.0, True),
    "mind4": ("mind", 4.0, True),
    "mind6": ("mind", 6.0, True),
    "raw": ("mind", 2.0, False),
    "lncc": ("lncc", 2.0, True),
    "mse": ("mse", 2.0, True),
}
log = logging.getLogger("guard_study")


def view_gains(session, box, patch) -> dict[str, float]:
    """The correction's gain in the box under each view of the images (``VIEWS``)."""
    state = session.state_at(len(session.history) - 1)  # before the step
    correction = correction_tensor(patch.delta_mm)
    problems = {
        matched: build_problem(
            session.compared_images(matched),
            box,
            RSOSettings().blend_margin_mm,
            session.grid,
            (session.grid.voxels_to_mm(state.field), state.patches),
            session.device,
        )
        for matched in (True, False)
    }  # one window per image pair; the views differ only in features
    gains = {}
    for name, (similarity, presmooth, matched) in VIEWS.items():
        settings = RSOSettings(
            similarity=similarity,
            control_spacing_mm=DEFAULT_RSO_CONTROL_SPACING_MM,
            smoothness=DEFAULT_RSO_SMOOTHNESS,
            step_mm=DEFAULT_RSO_STEP_MM,
            min_gain=0.0,
            presmooth_mm=presmooth,
            returns=False,
        )
        refinement = Refinement(problems[matched], settings)
        with torch.no_grad():
            before = float(refinement.similarity(torch.zeros_like(correction)))
            after = float(refinement.similarity(correction))
        gains[name] = 1.0 - after / before
    return gains


def correction_shape(patch, box_voxels) -> dict:
    """Mean correction vector in the box (LPS mm) and the superior-inferior share of its length."""
    inside = patch.delta_mm[box_voxels.slices].reshape(-1, 3)
    si_share = axis_share(inside, np.array([0.0, 0.0, 1.0]))  # the guard's measure, about the S axis
    return {"mean_mm": inside.mean(axis=0).tolist(), "si_share": si_share}


def study(out: Path, work: Path) -> None:
    done = (
        {json.dumps(json.loads(line)["key"]) for line in out.read_text().splitlines()}
        if out.is_file()
        else set()
    )
    with out.open("a") as handle:
        for anatomy, seed, preset, phase in CASES + MORE_CLINICAL_CASES:
            session = iso_session(case_folder(anatomy, seed, preset, phase), phase, work, matched_iso=False)
            for kind, count in BOXES.items():
                for index, box in enumerate(pick_boxes(session, kind, count, 40.0, seed=seed)):
                    key = [anatomy, seed, preset, phase, kind, index]
                    if json.dumps(key) in done:
                        continue
                    before = session.metrics(box=box)["tre_mm_box"]["mean"]
                    record = session.rso(
                        box,
                        RSOSettings(mode="native", min_gain=0.0, max_disagreement_mm=0.0, min_axis_share=0.0),
                    )
                    row = {
                        "key": key,
                        "tre_box_before": before,
                        "tre_box_after": record.metrics["tre_mm_box"]["mean"],
                        "guard": record.guard,
                        "declined": record.declined,
                    }
                    if record.accepted:
                        patch = session.state.patches[-1]
                        _, box_voxels, _ = window_grid(session.grid, box, RSOSettings().blend_margin_mm)
                        row.update(
                            gains=view_gains(session, box, patch), shape=correction_shape(patch, box_voxels)
                        )
                        session.undo()
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    log.info("%s %.2f -> %.2f %s", key, before, row["tre_box_after"], row.get("gains"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/guard/runs.jsonl"))
    parser.add_argument("--work", type=Path, default=sessions_dir(matched_iso=False))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    study(args.out, args.work)


if __name__ == "__main__":
    main()
