"""The half-fan rule (docs/decisions.md), scored on benchmark runs of TV phases (#20): replayed or built.

The rule: on a half-fan pair of TV phases native RSO declines (every box keeps ISO-100's field); on a
full-fan pair the guard has no second opinion. Each (case, box) of each ``--results`` folder (a ``bench``
run of TV cases) is scored as the product without the rule and with it: box TRE against ISO-100 and
ISO-500, #20's targets per scanner.

* A run from before the rule was built (TV cases registered without geometry): the rule is replayed.
  Where the second opinion ran, ``scripts/second_opinion_counterfactual.py`` must have written
  ``old_guard_counterfactual.jsonl`` beside it. Whether a case is a half fan comes from its fixed phase's
  geometry file, as the rule reads it.
* A run since (TV cases registered with their geometry files): ``rso_native`` is the rule as built, and
  ``rso_native_no_geometry`` the product for a user without the files.

    python scripts/half_fan_replay.py --results bench/results-conebeam-tv-5/truebeam \\
        --results bench/results-conebeam-tv-5/xvi --out bench/results-conebeam-tv-5/half_fan_replay.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from rso.core.projection.geometry import read_geometry

ARM_FILE = re.compile(
    r"arm_(.+)_(misaligned|residual|control)(\d+)_(iso_short|iso_long|rso_native|rso_native_no_geometry)\.json"
)


def boxes(results: Path) -> list[dict]:
    """One row per (case, box): ISO-100, ISO-500, the product's RSO and the rule's RSO (mm)."""
    arms = {}
    for path in results.glob("arm_*.json"):
        match = ARM_FILE.fullmatch(path.name)
        if match:
            case, kind, index, arm = match.groups()
            arms.setdefault((case, kind, index), {})[arm] = json.loads(path.read_text())
    counterfactual = results / "old_guard_counterfactual.jsonl"
    without = {}
    if counterfactual.is_file():
        for line in counterfactual.read_text().splitlines():
            row = json.loads(line)
            without[(row["case"], row["box"])] = row["old_guard"]
    rows = []
    for (case, kind, index), arm in sorted(arms.items()):
        tre = {name: record["metrics"]["tre_mm_box"]["mean"] for name, record in arm.items()}
        folder = Path(arm["rso_native"]["case"]["folder"])
        half_fan = read_geometry(folder / "cbct_phase0_geometry.xml").is_half_fan
        if "rso_native_no_geometry" in tre:  # built: the arm with the files is the rule
            product, rule = tre["rso_native_no_geometry"], tre["rso_native"]
        elif half_fan:
            product, rule = tre["rso_native"], tre["iso_short"]
        else:
            product = tre["rso_native"]
            rule = without.get((case, f"{kind}{index}"), product)
        row = {"case": case, "kind": kind, "half_fan": half_fan, "iso100": tre["iso_short"]}
        rows.append({**row, "iso500": tre["iso_long"], "product": product, "rule": rule})
    return rows


def score(rows: list[dict], arm: str) -> dict:
    """#20's targets for one arm: misaligned boxes against ISO-500, the others against ISO-100."""
    misaligned = [r for r in rows if r["kind"] == "misaligned"]
    others = [r for r in rows if r["kind"] != "misaligned"]
    reductions = [1 - r[arm] / r["iso500"] for r in misaligned]
    return {
        "misaligned_median_mm": round(float(np.median([r[arm] for r in misaligned])), 2),
        "iso500_median_mm": round(float(np.median([r["iso500"] for r in misaligned])), 2),
        "below_iso500": f"{sum(r[arm] < r['iso500'] for r in misaligned)} of {len(misaligned)}",
        "per_box_median_reduction": round(float(np.median(reductions)), 3),
        "worst_control_or_residual_vs_iso100_mm": round(max(r[arm] - r["iso100"] for r in others), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [row for folder in args.results for row in boxes(folder)]
    groups = {"all": rows, "half fan": [r for r in rows if r["half_fan"]]}
    groups["full fan"] = [r for r in rows if not r["half_fan"]]
    arms = ("product", "rule")
    report = {name: {arm: score(chosen, arm) for arm in arms} for name, chosen in groups.items() if chosen}
    for name, arms in report.items():
        for arm, values in arms.items():
            print(f"{name:9s} {arm:8s} {values}")
    args.out.write_text(json.dumps({"rows": rows, "scores": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
