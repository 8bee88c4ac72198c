"""A benchmark run's native-RSO arm re-scored at other guard thresholds, exactly and without re-running.

The guard only decides whether a finished refinement is kept (rso.core.native.guard_verdict): a step whose
gain is below the threshold (or that adds folding) leaves ISO-100's field. Each arm record holds the
step's gain and the box TRE of its outcome, so every threshold at or above the run's own follows from
one run exactly (a step the run declined holds no refined TRE: lower thresholds are not scored), on each
path the run has (matched, wrong geometry, no geometry: ``PATHS``). A step
that returned its box to an earlier state did not refine it: at a threshold above that return's gain the
box would have been refined instead, so such a threshold is not scored for its kind.

    python scripts/guard_thresholds.py bench/results
        # prints, writes bench/results/guard_thresholds.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rso.evaluation.bench.plan import (
    NO_GEOMETRY_ISO_ARM,
    NO_GEOMETRY_RSO_ARM,
    WRONG_GEOMETRY_ISO_ARM,
    WRONG_GEOMETRY_RSO_ARM,
)

THRESHOLDS = (0.10, 0.125, 0.15, 0.20, 0.25, 0.30, 0.35)
# Each path's native RSO arm and the ISO-100 arm it starts from
PATHS = {
    "default": ("rso_native", "iso_short"),
    "wrong geometry": (WRONG_GEOMETRY_RSO_ARM, WRONG_GEOMETRY_ISO_ARM),
    "no geometry": (NO_GEOMETRY_RSO_ARM, NO_GEOMETRY_ISO_ARM),
}


def box_tre(record: dict) -> float:
    return record["metrics"]["tre_mm_box"]["mean"]


def rescored(native: dict, iso_short: dict, threshold: float) -> float:
    guard = native["guard"]
    kept = (
        guard is not None and guard["gain"] >= threshold and guard["folded_after"] <= guard["folded_before"]
    )
    return box_tre(native) if kept else box_tre(iso_short)


def returned_below(native: dict, threshold: float) -> bool:
    """Whether the step returned the box to an earlier state at a gain this threshold would refuse."""
    guard = native["guard"] or {}
    return guard.get("returned_to") is not None and guard["gain"] < threshold


def table(folder: Path) -> list[dict]:
    boxes: dict[tuple, dict] = {}
    for path in folder.glob("arm_*.json"):
        record = json.loads(path.read_text())
        key = (record["case"]["name"], record["box"]["kind"], record["box"]["index"])
        boxes.setdefault(key, {})[record["arm"]] = record
    ran_at = max(r["rso_native"]["settings"]["min_gain"] for r in boxes.values())
    rows = []
    for threshold in (t for t in THRESHOLDS if t >= ran_at - 1e-9):
        for path, (arm, start) in PATHS.items():
            rows += path_rows(boxes, path, arm, start, threshold)
    return rows


def path_rows(boxes: dict, path: str, arm: str, start: str, threshold: float) -> list[dict]:
    """One path's rows at ``threshold``: ``arm`` rescored, against ``start`` (its ISO-100) and ISO-500."""
    rows = []
    for kind in ("misaligned", "residual", "control"):
        for scope in ("all cases", "lung2"):
            keys = [
                k
                for k in boxes
                if k[1] == kind and arm in boxes[k] and (scope == "all cases" or "lung2" in k[0])
            ]
            if not keys or any(returned_below(boxes[k][arm], threshold) for k in keys):
                continue
            native = [rescored(boxes[k][arm], boxes[k][start], threshold) for k in keys]
            iso_500 = [box_tre(boxes[k]["iso_long"]) for k in keys]
            change = [n - box_tre(boxes[k][start]) for n, k in zip(native, keys)]
            rows.append(
                {
                    "min_gain": threshold,
                    "path": path,
                    "kind": kind,
                    "scope": scope,
                    "boxes": len(keys),
                    "median_box_tre_mm": float(np.median(native)),
                    "wins_vs_iso500": float(np.mean([n < a for n, a in zip(native, iso_500)])),
                    "median_reduction_vs_iso500": float(
                        np.median([1 - n / a for n, a in zip(native, iso_500)])
                    ),
                    "median_change_vs_iso100_mm": float(np.median(change)),
                    "worst_change_vs_iso100_mm": float(np.max(change)),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("bench/results"))
    args = parser.parse_args()
    rows = table(args.results)
    print(
        "min_gain | path | kind | scope | boxes | median TRE | wins vs ISO-500 | reduction | "
        "vs ISO-100 median / worst"
    )
    for r in rows:
        print(
            f"{r['min_gain']:.3f} | {r['path']} | {r['kind']} | {r['scope']} | {r['boxes']} | "
            f"{r['median_box_tre_mm']:.2f} | "
            f"{r['wins_vs_iso500']:.0%} | {r['median_reduction_vs_iso500']:+.0%} | "
            f"{r['median_change_vs_iso100_mm']:+.2f} / {r['worst_change_vs_iso100_mm']:+.2f}"
        )
    out = args.results / "guard_thresholds.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
