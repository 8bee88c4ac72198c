"""Which images tell, in a box, that ISO moved away from a better earlier answer (issue: RSO in mm)?

For every box of the sweep's training cases (ISO-100 on the artefact-matched pair, as the default), the
native similarity (MIND-SSC, 2 mm pre-smoothing) is evaluated in the box on two image pairs: the matched
pair ISO fitted, and the images as given, which ISO never saw. On each it gives the gain of the truth and
of the general model's field over the current field (1 - cost(field) / cost(current); negative: the pair
prefers the current field). Where ISO went wrong, the matched pair still prefers ISO's answer and the
images as given do not: that is what native RSO's return to an earlier state rests on (rso.core.native).

    python scripts/evidence_study.py --out bench/sweep/return-unfitted/evidence.json

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the native defaults, without the guard: the settings of the streak study
from streak_study import SETTINGS  # noqa: E402
from sweep_rso import BOXES, CASES, MORE_CLINICAL_CASES, case_folder, iso_session, sessions_dir  # noqa: E402

from rso.core.geometry import upsample_field  # noqa: E402
from rso.core.native import Refinement, build_problem, correction_tensor  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.options import DEFAULT_BLEND_MARGIN_MM  # noqa: E402

GENERAL = 1  # the session's state after its first step, the general model


def box_row(session, box) -> dict:
    """Box TRE of the current and the general model's field, and each pair's gain for the truth and the
    general."""
    state = session.state
    general = session.state_at(GENERAL)
    row = {}
    for name, pair in (
        ("matched", session.compared_images(True)),
        ("as_given", (session.fixed, session.moving)),
    ):
        problem = build_problem(
            pair,
            box,
            DEFAULT_BLEND_MARGIN_MM,
            session.grid,
            (session.grid.voxels_to_mm(state.field), state.patches),
            torch.device("cpu"),
            earlier=((session.grid.voxels_to_mm(general.field), general.patches),),
        )
        truth = sitk.GetArrayFromImage(upsample_field(session.truth, problem.window.reference_image()))
        inside = problem.box.slices
        row["tre_current_mm"] = float(np.linalg.norm((truth - problem.current_mm)[inside], axis=-1).mean())
        row["tre_general_mm"] = float(np.linalg.norm((truth - problem.earlier_mm[0])[inside], axis=-1).mean())
        refinement = Refinement(problem, SETTINGS)
        with torch.no_grad():
            now = float(refinement.similarity(torch.zeros(1, 3, *problem.window.shape)))
            for field_name, field in (("truth", truth), ("general", problem.earlier_mm[0])):
                cost = float(refinement.similarity(correction_tensor(field - problem.current_mm)))
                row[f"{name}_gain_{field_name}"] = 1.0 - cost / now
    return row


def study(out: Path) -> list[dict]:
    rows = []
    for anatomy, seed, preset, phase in CASES + MORE_CLINICAL_CASES:
        session = iso_session(case_folder(anatomy, seed, preset, phase), phase, sessions_dir(True))
        for kind, count in BOXES.items():
            for index, box in enumerate(pick_boxes(session, kind, count, 40.0, seed=seed)):
                row = {
                    "case": [anatomy, seed, preset, phase],
                    "kind": kind,
                    "box": index,
                    **box_row(session, box),
                }
                rows.append(row)
                print(
                    f"{anatomy:13s}{seed:3d} {preset:9s}{kind:11s}{index} "
                    f"TRE current {row['tre_current_mm']:5.2f} general {row['tre_general_mm']:5.2f} | "
                    f"matched: truth {row['matched_gain_truth']:+.2f} "
                    f"general {row['matched_gain_general']:+.2f} | "
                    f"as given: truth {row['as_given_gain_truth']:+.2f} "
                    f"general {row['as_given_gain_general']:+.2f}",
                    flush=True,
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": dataclasses.asdict(SETTINGS), "rows": rows}, indent=1) + "\n")
    tmp.replace(out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/return-unfitted/evidence.json"))
    study(parser.parse_args().out)


if __name__ == "__main__":
    main()
