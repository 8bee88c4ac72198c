"""One row per cone-beam benchmark run, and the misaligned boxes pooled by scanner preset (#20).

Each run of ``rso-registration bench`` on fresh seeds writes one folder of per-arm records; its summary
scores that run alone. This script reads several runs' records (``--run DIR``, repeatable) and prints, for
the default arm (ISO-100 + native RSO, matched):

* per run: the misaligned boxes' median box TRE at ISO-500 and after the step, how many of them end below
  ISO-500 on each preset, the control and residual boxes ending more than 0.5 mm worse than ISO-100 on each
  path (default, wrong geometry, no geometry) with the worst change, and the median box -> overlay latency;
* per path, pooled: the misaligned boxes ending more than 0.5 mm worse than that path's ISO-100;
* per preset, pooled over the runs: #20's misaligned targets (share of boxes below ISO-500, median
  reduction); how many steps the guard kept, how many of those ended below ISO-500 and their median
  reduction; and in how many boxes ISO-500's answer was the general model's (ISO declined), where "below
  ISO-500" means below the general model.

Runs made with different defaults are pooled as they ran; the README and docs/results.md say which default
each run had. Writes the same numbers as JSON (``--out``).

    python scripts/conebeam_runs_table.py --run bench/results-conebeam-5 ... --out bench/conebeam-runs.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "RSORegistration"))
from rso.evaluation.bench.plan import (  # noqa: E402
    NO_GEOMETRY_ISO_ARM,
    NO_GEOMETRY_RSO_ARM,
    WRONG_GEOMETRY_ISO_ARM,
    WRONG_GEOMETRY_RSO_ARM,
    default_arm,
)
from rso.evaluation.bench.summary import paired, versus  # noqa: E402

DEFAULT_ARM = default_arm()
CASE_FOLDER = re.compile(r"^bench-[^-]+-(?P<preset>.+)-seed\d+(-phase\d+)?$")
HARM_MM = 0.5  # #20's guard target: no control or residual box worse than ISO-100 by more than this
PATHS = {  # the RSO arm of each path and the ISO-100 arm it starts from
    "default": (DEFAULT_ARM, "iso_short"),
    "wrong geometry": (WRONG_GEOMETRY_RSO_ARM, WRONG_GEOMETRY_ISO_ARM),
    "no geometry": (NO_GEOMETRY_RSO_ARM, NO_GEOMETRY_ISO_ARM),
}


def read_run(folder: Path) -> list[dict]:
    """Every per-arm record of one benchmark run (the ``arm_*.json`` files)."""
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("arm_*.json"))]
    if not records:
        raise SystemExit(f"error: no arm records (arm_*.json) in {folder}")
    for record in records:
        record["case"]["preset"] = record["case"]["preset"] or folder_preset(record["case"]["folder"])
    return records


def folder_preset(folder: str) -> str:
    """The preset of a case given to ``bench --case-dir`` (its record has none), from the folder's name as
    ``rso.evaluation.bench.cases.case_folder`` makes it: bench-ANATOMY-PRESET-seedN[-phaseK]."""
    found = CASE_FOLDER.match(Path(folder).name)
    if found is None:
        raise SystemExit(f"error: {folder}: no preset recorded, and not a case_folder name")
    return found["preset"]


def box_tre(record: dict) -> float:
    return record["metrics"]["tre_mm_box"]["mean"]


def of_kind(records: list[dict], kinds: tuple[str, ...], preset: str | None = None) -> list[dict]:
    """The records of boxes of these kinds (on one scanner preset where given)."""
    return [
        r for r in records if r["box"]["kind"] in kinds and (preset is None or r["case"]["preset"] == preset)
    ]


def harm(records: list[dict]) -> dict:
    """Per path: control and residual boxes more than HARM_MM worse than ISO-100, and the worst change; and
    misaligned boxes more than HARM_MM worse than that path's ISO-100 (not in #20's guard target, but a box
    ISO has already fixed on one path is no longer misaligned there: the boxes are picked on the default
    path's field)."""
    result = {}
    for path, (arm, start) in PATHS.items():
        judged, worse, worst = _worse(of_kind(records, ("control", "residual")), arm, start)
        result[path] = {"boxes_judged": judged, "worse_than_limit": worse, "worst_change_mm": worst}
        _, worse, worst = _worse(of_kind(records, ("misaligned",)), arm, start)
        result[path] |= {"misaligned_worse_than_limit": worse, "misaligned_worst_change_mm": worst}
    return result


def _worse(records: list[dict], arm: str, start: str) -> tuple[int, int, float | None]:
    """(boxes paired, boxes more than HARM_MM worse after ``arm`` than at ``start``, the worst change mm)."""
    changes = [box_tre(after) - box_tre(before) for after, before in paired(records, arm, start)]
    worst = round(max(changes), 2) if changes else None
    return len(changes), int(sum(c > HARM_MM for c in changes)), worst


def misaligned(records: list[dict], preset: str | None = None) -> dict | None:
    """#20's misaligned targets for the default arm against ISO-500, with the medians before and after."""
    mine = of_kind(records, ("misaligned",), preset)
    pairs = paired(mine, DEFAULT_ARM, "iso_long")
    score = versus(mine, DEFAULT_ARM, "iso_long")
    if not pairs or score is None:
        return None
    return {
        "boxes": len(pairs),
        "below_iso_500": int(sum(box_tre(a) < box_tre(b) for a, b in pairs)),
        "win_fraction": round(score["win_fraction"], 3),
        "median_reduction": round(score["median_box_tre_reduction"], 3),
        "iso_500_median_mm": round(float(np.median([box_tre(b) for _, b in pairs])), 2),
        "rso_median_mm": round(float(np.median([box_tre(a) for a, _ in pairs])), 2),
        **kept_steps(pairs),
        "iso_500_is_general": iso_500_is_general(mine),
    }


def kept_steps(pairs: list[tuple[dict, dict]]) -> dict:
    """Of (RSO, ISO-500) box pairs, the steps the guard kept: how many, how many ended below ISO-500, and
    their median box TRE reduction (None where none was kept)."""
    kept = [(a, b) for a, b in pairs if not a.get("declined")]
    reductions = [1 - box_tre(a) / box_tre(b) for a, b in kept]
    return {
        "kept": len(kept),
        "kept_below_iso_500": int(sum(box_tre(a) < box_tre(b) for a, b in kept)),
        "kept_median_reduction": round(float(np.median(reductions)), 3) if kept else None,
    }


def iso_500_is_general(records: list[dict]) -> int:
    """Boxes where ISO-500's box TRE is the general model's: ISO kept the field it started from."""
    return int(sum(box_tre(b) == box_tre(g) for b, g in paired(records, "iso_long", "general")))


def run_row(folder: Path, records: list[dict]) -> dict:
    latency = [r.get("latency_seconds") for r in records if r["arm"] == DEFAULT_ARM]
    latency = [v for v in latency if v is not None]
    return {
        "run": folder.name,
        "seeds": sorted({r["case"]["seed"] for r in records}),
        "misaligned": misaligned(records),
        "by_preset": {p: misaligned(records, p) for p in presets(records)},
        "harm": harm(records),
        "latency_median_s": round(float(np.median(latency)), 1) if latency else None,
        "cpu": records[0]["machine"]["cpu"],
    }


def presets(records: list[dict]) -> list[str]:
    return sorted({r["case"]["preset"] for r in records})


def harm_cell(counts: dict) -> str:
    """'1 of 18 (+0.87)': boxes worse than the limit on one path, with the worst change where any."""
    worst = f" ({counts['worst_change_mm']:+.2f})" if counts["worse_than_limit"] else ""
    return f"{counts['worse_than_limit']} of {counts['boxes_judged']}{worst}"


def print_table(rows: list[dict], pooled: dict) -> None:
    print("| run | seeds | misaligned: ISO-500 -> RSO (median mm) | below ISO-500, by preset |", end="")
    print(f" > {HARM_MM} mm worse: default path | wrong geometry | no geometry | latency (s), 2-core CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        m = row["misaligned"]
        below = ", ".join(f"{p} {v['below_iso_500']}/{v['boxes']}" for p, v in row["by_preset"].items() if v)
        seeds = "/".join(str(s) for s in row["seeds"])
        harms = " | ".join(harm_cell(row["harm"][path]) for path in PATHS)
        print(
            f"| {row['run']} | {seeds} | {m['iso_500_median_mm']} -> {m['rso_median_mm']} | {below} |"
            f" {harms} | {row['latency_median_s']} ({row['cpu']}) |"
        )
    print(f"\nmisaligned boxes more than {HARM_MM} mm worse than the path's ISO-100, pooled:")
    for path in PATHS:
        worse = [
            row["harm"][path] for row in rows if row["harm"][path]["misaligned_worst_change_mm"] is not None
        ]
        count = sum(h["misaligned_worse_than_limit"] for h in worse)
        worst = max((h["misaligned_worst_change_mm"] for h in worse), default=0.0)
        print(f"  {path}: {count} (worst {worst:+.2f} mm)")
    print("\npooled misaligned boxes, by preset (targets: >= 80 % below ISO-500, median reduction >= 30 %)")
    for preset, v in pooled.items():
        print(
            f"  {preset}: {v['below_iso_500']} of {v['boxes']} below ISO-500"
            f" ({100 * v['win_fraction']:.0f} %), median reduction {100 * v['median_reduction']:.0f} %,"
            f" median {v['iso_500_median_mm']} -> {v['rso_median_mm']} mm; steps kept {v['kept']},"
            f" {v['kept_below_iso_500']} of them below ISO-500 (median reduction {_percent(v)});"
            f" ISO-500 = the general model in {v['iso_500_is_general']} of {v['boxes']}"
        )


def _percent(pooled: dict) -> str:
    reduction = pooled["kept_median_reduction"]
    return "-" if reduction is None else f"{100 * reduction:.0f} %"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a bench output folder")
    parser.add_argument("--out", type=Path, help="write the rows and the pooled numbers as JSON")
    args = parser.parse_args(argv)
    runs = [(folder, read_run(folder)) for folder in args.run]
    rows = [run_row(folder, records) for folder, records in runs]
    everything = [r for _, records in runs for r in records]
    pooled = {p: misaligned(everything, p) for p in presets(everything)}
    print_table(rows, pooled)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runs": rows, "pooled_misaligned": pooled}, indent=1) + "\n")
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
