"""How far box RMSE is from the truth: the moving CBCT warped by the *true* field, per benchmark box.

For every box of one kind in a bench run, the box RMSE (HU, against the clean fixed CT, in the lungs,
on the model grid) that the simulator's true field reaches, beside ISO-100's and native RSO's. Where
the truth's RMSE is above ISO-100's, ISO has matched intensities (streaks, noise) that the anatomy
does not explain, and a lower RMSE is no sign of a better registration. Prints a table, writes JSON.

    python scripts/truth_rmse.py --results bench/results --kind misaligned --out bench/results/truth_rmse.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rso.core.workflow import start_session
from rso.evaluation.bench.cases import Case
from rso.settings import EngineSettings


def truth_rows(arm_files: list[Path]) -> list[dict]:
    """Per box: the true field's box RMSE, and the bench's ISO-100 and native RSO box RMSE (one session
    per case)."""
    sessions: dict[str, object] = {}
    rows = []
    for arm_file in arm_files:
        record = json.loads(arm_file.read_text())
        case = record["case"]
        if case["name"] not in sessions:
            inputs = Case(
                case["name"],
                Path(case["folder"]),
                case["anatomy"],
                case["seed"],
                case["moving_phase"],
                case["fixed_phase"],
                case["evaluation_mask"],
            ).inputs()
            sessions[case["name"]] = start_session(EngineSettings(device="cpu", precision="fp32"), inputs)
        session = sessions[case["name"]]
        box = session.box_from_ras(record["box"]["ras"])
        truth = session.metrics(field_voxels=session.grid.mm_to_voxels(session.truth_mm), box=box)
        native = json.loads(Path(str(arm_file).replace("_iso_short.json", "_rso_native.json")).read_text())
        rows.append(
            {
                "case": case["name"],
                "box": record["box"]["index"],
                "truth_rmse_hu_box": truth["rmse_hu_box"],
                "iso_short_rmse_hu_box": record["metrics"]["rmse_hu_box"],
                "rso_native_rmse_hu_box": native["metrics"]["rmse_hu_box"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--kind", default="misaligned", choices=("misaligned", "residual", "control"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/truth_rmse.json"))
    args = parser.parse_args()
    rows = truth_rows(sorted(args.results.glob(f"arm_*_{args.kind}*_iso_short.json")))
    columns = ("truth_rmse_hu_box", "iso_short_rmse_hu_box", "rso_native_rmse_hu_box")
    print(f"{'case':32s}{'box':>4s}{'truth':>8s}{'ISO-100':>9s}{'native':>8s}   (box RMSE vs clean CT, HU)")
    for row in rows:
        print(
            f"{row['case']:32s}{row['box']:>4d}"
            + "".join(f"{row[c]:>{w}.1f}" for c, w in zip(columns, (8, 9, 8)))
        )
    medians = {c: float(np.median([row[c] for row in rows])) for c in columns}
    print(f"{'median':36s}" + "".join(f"{medians[c]:>{w}.1f}" for c, w in zip(columns, (8, 9, 8))))
    args.out.write_text(json.dumps({"kind": args.kind, "rows": rows, "medians": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
