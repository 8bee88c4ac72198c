"""Choose native RSO's settings on the training anatomies only, against ground truth (issue: RSO in mm).

For each training case (simulated once and cached): general -> ISO-100 with the bundled model, then
boxes of every kind (misaligned, residual, control), then native RSO with each setting of a grid on
each box, undone after each. Every run is one JSON line in --out: the box's TRE before and after,
the guard's numbers, seconds. The guard's threshold is chosen afterwards from these lines
(``--summarise``), since it only decides whether a finished refinement is kept.

    python scripts/sweep_rso.py --out bench/sweep/runs.jsonl            # the sweep (resumable)
    python scripts/sweep_rso.py --out bench/sweep/runs.jsonl --summarise

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np

from rso.core.paths import cases_dir
from rso.core.session import RegistrationSession, open_inputs
from rso.core.steps import RSOSettings
from rso.core.workflow import EngineSettings
from rso.evaluation.box_kinds import pick_boxes
from rso.simulation.fetch import fetch_data
from rso.simulation.simulate import SimulationParams, simulate_case

log = logging.getLogger("sweep")

THORAX = Path(__file__).resolve().parents[2] / "shared" / "data" / "thorax"  # training/exploring only
# (anatomy, seed, preset, moving phase): training anatomies only; seeds the benchmark does not use.
CASES = [("cxr", 7, "local", 5), ("lung1", 7, "local", 5), ("chest_crop_a", 7, "local", 5),
         ("chest_crop_b", 7, "local", 5), ("cxr", 8, "clinical", 3), ("lung1", 8, "clinical", 3),
         ("chest_crop_a", 8, "clinical", 3), ("cxr", 9, "standard", 5)]
BOXES = {"misaligned": 2, "residual": 1, "control": 2}
# (similarity, pre-smoothing mm) x control spacing x smoothness, at 60 iterations.
SIMILARITIES = (("mind", 1.0), ("mind", 2.0), ("mind", 3.0), ("mse", 2.0), ("lncc", 2.0))
GRID = {"control_spacing_mm": (8.0, 12.0), "smoothness": (0.3, 1.0, 3.0), "iterations": (60,)}


def source_ct(anatomy: str) -> Path:
    if anatomy.startswith("chest_crop"):
        return THORAX / f"{anatomy}.nii.gz"
    return fetch_data()[anatomy]


def case_folder(anatomy: str, seed: int, preset: str, phase: int) -> Path:
    folder = cases_dir() / f"sweep-{anatomy}-{preset}-seed{seed}"
    if not (folder / "case.json").is_file():
        log.info("simulating %s", folder.name)
        simulate_case(source_ct(anatomy), folder, phases=10, seed=seed, params=SimulationParams.preset(preset),
                      overwrite=True, only=[phase])
    return folder


def iso_session(folder: Path, phase: int, work: Path) -> RegistrationSession:
    """general -> ISO-100 on the case, saved once and reopened afterwards."""
    session_dir = work / f"{folder.name}-phase{phase}"
    if (session_dir / "session.json").is_file():
        return RegistrationSession.open(session_dir, device="cpu")
    inputs = open_inputs(folder / "cbct_phase0.nii.gz", folder / f"cbct_phase{phase}.nii.gz",
                         folder / "ct_phase0.nii.gz", folder / f"truth_0_{phase}.nii.gz", folder / "lung_mask.nii.gz")
    session = EngineSettings(device="cpu").session(inputs, folder=session_dir)
    session.general()
    session.iso(100)
    return session


def settings_grid():
    keys = list(GRID)
    for (similarity, presmooth), values in itertools.product(SIMILARITIES, itertools.product(*GRID.values())):
        yield {"similarity": similarity, "presmooth_mm": presmooth, **dict(zip(keys, values))}


def sweep(out: Path, work: Path) -> None:
    done = {line for line in out.read_text().splitlines()} if out.is_file() else set()
    keys = {json.dumps(json.loads(line)["key"]) for line in done}
    with out.open("a") as handle:
        for anatomy, seed, preset, phase in CASES:
            session = iso_session(case_folder(anatomy, seed, preset, phase), phase, work)
            for kind, count in BOXES.items():
                for index, box in enumerate(pick_boxes(session, kind, count, 40.0, seed=seed)):
                    before = session.metrics(box=box)["tre_mm_box"]["mean"]
                    for setting in settings_grid():
                        key = [anatomy, seed, preset, phase, kind, index, setting]
                        if json.dumps(key) in keys:
                            continue
                        handle.write(json.dumps(run_one(session, box, setting, key, before)) + "\n")
                        handle.flush()


def run_one(session: RegistrationSession, box, setting: dict, key: list, before: float) -> dict:
    start = time.perf_counter()
    record = session.rso(box, RSOSettings(mode="native", min_gain=0.0, **setting))
    seconds = time.perf_counter() - start
    if record.accepted:
        session.undo()
    return {"key": key, "tre_box_before": before, "tre_box_after": record.metrics["tre_mm_box"]["mean"],
            "declined": record.declined, "guard": record.guard, "seconds": seconds,
            "outside_change_mm": record.metrics["outside_change_mm"]}


def summarise(out: Path) -> None:
    """Per setting: median TRE change per box kind; then, for the best settings, the guard threshold."""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_setting: dict[str, list] = {}
    for row in rows:
        by_setting.setdefault(json.dumps(row["key"][6], sort_keys=True), []).append(row)
    table = []
    for setting, runs in by_setting.items():
        table.append((setting, *_kind_stats(runs, 0.0)))
    table.sort(key=lambda r: r[1])
    print("setting | misaligned median change (mm) | control median | control worst | residual median")
    for row in table[:15]:
        print(" | ".join([row[0]] + [f"{v:+.2f}" for v in row[1:]]))
    best = json.loads(table[0][0])
    print("\nguard threshold for the best setting", best)
    runs = by_setting[json.dumps(best, sort_keys=True)]
    for threshold in (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3):
        print(f"min_gain {threshold:.2f}: " + ", ".join(f"{v:+.2f}" for v in _kind_stats(runs, threshold)))


def _kind_stats(runs: list[dict], min_gain: float) -> tuple[float, float, float, float]:
    def change(row):
        kept = row["guard"] and row["guard"]["gain"] >= min_gain and row["guard"]["jacobian_min"] > 0
        return row["tre_box_after"] - row["tre_box_before"] if kept else 0.0

    kinds = {k: [change(r) for r in runs if r["key"][4] == k] for k in ("misaligned", "control", "residual")}
    return (float(np.median(kinds["misaligned"])), float(np.median(kinds["control"])), float(np.max(kinds["control"])),
            float(np.median(kinds["residual"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/runs.jsonl"))
    parser.add_argument("--work", type=Path, default=cases_dir().parent / "sweep-sessions")
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.summarise:
        summarise(args.out)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sweep(args.out, args.work)


if __name__ == "__main__":
    main()
