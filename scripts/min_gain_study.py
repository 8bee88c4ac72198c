"""The box guard's gain threshold below its default, from benchmark runs and replays of the steps it declined
(bench/sweep/min-gain-four-patient/plan.md).

A step's gain does not depend on the threshold, and the guard keeps a step only if every rule passes, so a
lower threshold changes only steps declined on gain alone. Every default-path (``rso_native``) step
declined with a gain in [LOWEST, default) is replayed with ``min_gain = LOWEST``
(``scripts/box_step_replay.py``: kept or not by the rest of the guard, its box TRE). At a threshold t a
replayed step counts as kept if its gain is >= t; every other box keeps its run's outcome.

    python scripts/min_gain_study.py --run bench/sweep/min-gain-four-patient/xvi \\
        --run bench/sweep/min-gain-four-patient/truebeam --out bench/sweep/min-gain-four-patient/study.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from box_step_replay import replay  # noqa: E402
from guard_thresholds import box_tre  # noqa: E402

from rso.settings import RSOSettings  # noqa: E402

LOWEST = 0.10
# The runs studied were made at the threshold of the time; a step declined below it on gain alone is replayed.
RUN_MIN_GAIN = 0.20
THRESHOLDS = (0.10, 0.125, 0.15, 0.175, 0.20)
HARM_MM = 0.5  # #20: no control or residual box worse than ISO-100 by more than this
CONTROL_MEDIAN_MM = 0.1  # #20: the control boxes' median change at most this


def boxes(run: Path) -> list[dict]:
    """Every box of a run: its kind, ISO-100's, ISO-500's and the default path's box TRE and guard."""
    result = []
    for native_path in sorted(run.glob("arm_*_rso_native.json")):
        native = json.loads(native_path.read_text())
        stem = native_path.name.removesuffix("_rso_native.json")
        iso_short = json.loads((run / f"{stem}_iso_short.json").read_text())
        iso_long = json.loads((run / f"{stem}_iso_long.json").read_text())
        guard = native.get("guard") or {}
        result.append(
            {
                "record": str(native_path),
                "kind": native["box"]["kind"],
                "iso_short_mm": box_tre(iso_short),
                "iso_long_mm": box_tre(iso_long),
                "native_mm": box_tre(native),
                "kept": not native.get("declined"),
                "gain": guard.get("gain"),
                "returned_to": guard.get("returned_to"),
            }
        )
    return result


def replay_near_misses(rows: list[dict], work: Path) -> None:
    """Replay (once, cached in ``work``) every declined step with LOWEST <= gain < RUN_MIN_GAIN."""
    settings = RSOSettings(min_gain=LOWEST)
    for row in rows:
        if row["kept"] or row["gain"] is None or not LOWEST <= row["gain"] < RUN_MIN_GAIN:
            continue
        cached = work / f"replay_{Path(row['record']).stem}.json"
        if not cached.is_file():
            cached.write_text(json.dumps(replay(Path(row["record"]), None, settings), indent=1) + "\n")
        result = json.loads(cached.read_text())
        row["replay_kept"] = not result["declined"]
        row["replay_mm"] = result["box_tre_after_mm"]
        row["replay_gain"] = (result["guard"] or {}).get("gain")


def outcome(row: dict, threshold: float) -> float:
    if row.get("replay_kept") and row["replay_gain"] >= threshold:
        return row["replay_mm"]
    return row["native_mm"]


def score(rows: list[dict], threshold: float) -> dict:
    change = {kind: [] for kind in ("misaligned", "control", "residual")}
    below, reduction = 0, []
    for row in rows:
        tre = outcome(row, threshold)
        change[row["kind"]].append(tre - row["iso_short_mm"])
        if row["kind"] == "misaligned":
            below += tre < row["iso_long_mm"] - 1e-9
            reduction.append(1 - tre / row["iso_long_mm"])
    quiet = change["control"] + change["residual"]
    return {
        "threshold": threshold,
        "misaligned_below_iso_long": f"{below} of {len(reduction)}",
        "misaligned_median_reduction": round(float(np.median(reduction)), 3),
        "control_median_change_mm": round(float(np.median(change["control"])), 3),
        "should_not_move_worse": sum(c > HARM_MM for c in quiet),
        "should_not_move_worst_mm": round(float(max(quiet)), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a benchmark's --out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [row for run in args.run for row in boxes(run)]
    replay_near_misses(rows, args.out.parent)
    table = [score(rows, t) for t in THRESHOLDS]
    harmless = [
        s
        for s in table
        if s["should_not_move_worse"] == 0 and s["control_median_change_mm"] <= CONTROL_MEDIAN_MM
    ]
    chosen = min((s["threshold"] for s in harmless), default=None)
    args.out.write_text(json.dumps({"rows": rows, "table": table, "chosen": chosen}, indent=1) + "\n")
    for entry in table:
        print(entry)
    print("chosen:", chosen, "| steps that returned a box:", sum(r["returned_to"] is not None for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
