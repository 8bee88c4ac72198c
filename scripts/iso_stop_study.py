"""Could the images as given tell ISO when to stop? (a study for the next round; no default depends on it)

ISO fine-tunes on the artefact-matched pair and, on the clinical preset, can move regions away from the
general model's better answer (bench/README.md). The images as given carry other streaks and are not
fitted, like a validation set. For each training case, ISO-N on the matched pair for several N, each run
from the general model: the whole-lung TRE (truth) beside the MSE of the images as given inside the lungs
(truth-free). If the N with the lowest unfitted MSE is also the N with the lowest TRE, that MSE could stop
ISO early. One JSON line per (case, N).

    python scripts/iso_stop_study.py --out bench/sweep/iso-stop/runs.jsonl   # then --summarise

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_rso import ISO_MATCHED_CASES, MORE_CLINICAL_CASES, case_folder, case_inputs  # noqa: E402

from rso.core.workflow import start_session
from rso.settings import EngineSettings, ISOSettings  # noqa: E402

ITERATIONS = (0, 10, 25, 50, 100, 200)  # 0: the general model alone


def unfitted_mse(session) -> float:
    """Mean squared HU difference of the images as given (moving warped by the current field) in the lungs."""
    inside = (
        session.evaluation_mask
        if session.evaluation_mask is not None
        else np.ones_like(session.fixed_hu, bool)
    )
    return float(np.mean((session.warped_model_grid() - session.fixed_hu)[inside] ** 2))


def study(out: Path) -> None:
    done = (
        {(tuple(r["case"]), r["iterations"]) for r in map(json.loads, out.read_text().splitlines())}
        if out.is_file()
        else set()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for anatomy, seed, preset, phase in ISO_MATCHED_CASES + MORE_CLINICAL_CASES:
            key = [anatomy, seed, preset, phase]
            if all((tuple(key), n) in done for n in ITERATIONS):
                continue
            folder = case_folder(anatomy, seed, preset, phase)
            session = start_session(EngineSettings(device="cpu"), case_inputs(folder, phase))
            session.general()
            for iterations in ITERATIONS:
                if iterations:
                    session.iso(ISOSettings(iterations=iterations, match_artefacts=True))
                row = {
                    "case": key,
                    "iterations": iterations,
                    "tre_mm": session.metrics()["tre_mm"]["mean"],
                    "unfitted_mse": unfitted_mse(session),
                }
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                print(json.dumps(row), flush=True)
                if iterations:
                    session.undo()


def summarise(out: Path) -> list[dict]:
    """Per case: the N with the lowest TRE, the N the unfitted MSE would pick, and the TRE at each."""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    table = []
    for case in sorted({tuple(r["case"]) for r in rows}):
        mine = sorted((r for r in rows if tuple(r["case"]) == case), key=lambda r: r["iterations"])
        best, picked = min(mine, key=lambda r: r["tre_mm"]), min(mine, key=lambda r: r["unfitted_mse"])
        iso_100 = next(r for r in mine if r["iterations"] == 100)
        table.append(
            {
                "case": list(case),
                "best_iterations": best["iterations"],
                "best_tre_mm": best["tre_mm"],
                "picked_iterations": picked["iterations"],
                "picked_tre_mm": picked["tre_mm"],
                "iso_100_tre_mm": iso_100["tre_mm"],
            }
        )
        by_n = ", ".join(f"{r['iterations']}: {r['tre_mm']:.2f}" for r in mine)
        print(
            f"{' '.join(map(str, case)):30s} TRE by N: {by_n} | best N {best['iterations']}, "
            "unfitted MSE picks "
            f"N {picked['iterations']} ({picked['tre_mm']:.2f} mm; ISO-100 {iso_100['tre_mm']:.2f})"
        )
    (out.parent / "summary.json").write_text(json.dumps(table, indent=1) + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/iso-stop/runs.jsonl"))
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    if not args.summarise:
        study(args.out)
    summarise(args.out)


if __name__ == "__main__":
    main()
