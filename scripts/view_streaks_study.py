"""Box steps without projection geometry: the streaks seen in the image (#20; the rule, written first:
bench/sweep/view-streaks/rule.md).

Each case's phase pairs (``cbct``: the cone-beam phases; ``ct``: the CT phases) get
``rso.core.view_streaks.pair_modulation``. Joined with records of no-geometry box steps, it says which
pairs the rule would rule out and what that costs:

* ``--records``: the guard study's JSON lines (``scripts/conebeam_guard_study.py --no-geometry-only``;
  a step's change is ``tre_default - tre_before``), for choosing the threshold by the rule;
* ``--bench``: benchmark result folders (``arm_*.json``; a step's change is native RSO without geometry
  against ISO-100 without geometry), for scoring a frozen ``--threshold``.

    python scripts/view_streaks_study.py --records bench/sweep/conebeam-guard/no-geometry-truth-model.jsonl \\
        --cases-root ~/.cache/rso-registration/cases /tmp/cases --out bench/sweep/view-streaks/training.json
    python scripts/view_streaks_study.py --bench bench/results-conebeam-9 --threshold T
    python scripts/view_streaks_study.py --case DIR ... --threshold T   # values only (e.g. other recipes)
    python scripts/view_streaks_study.py --bench bench/results-conebeam-10 --threshold T \
        --counterfactual bench/results-conebeam-10/view-streaks-off.jsonl

``--counterfactual``: on each ruled-out pair of the ``--bench`` folders, what the declined steps would have
done: ISO-100 without geometry (fp32), then native RSO on each of the benchmark's boxes with the scan's
rule off (``RSOSettings(scan_rule=False)``, the guard as it is), one JSON line per box.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rso.core.view_streaks import pair_modulation  # noqa: E402

HARM_MM = 0.5


def case_values(folder: Path) -> dict:
    """The pair value of each pair kind the case folder holds (fixed phase 0, the other phase moving)."""
    values = {}
    for kind in ("cbct", "ct"):
        phases = sorted(folder.glob(f"{kind}_phase*.nii.gz"))
        if len(phases) == 2:
            values[kind] = pair_modulation(*(sitk.ReadImage(str(p)) for p in phases))
    return values


def steps_from_records(path: Path) -> dict[str, list[tuple[str, float]]]:
    """case name -> [(box kind, change of box TRE mm)] of the guard study's no-geometry steps."""
    steps = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("chain") == "no_geometry" and "tre_default" in row:
            steps[row["case"]].append((row["kind"], row["tre_default"] - row["tre_before"]))
    return steps


def no_geometry_arms(folder: Path, arm: str = ""):
    """The benchmark's no-geometry arm records in ``folder`` (``arm``: only that arm's), sorted by file."""
    for path in sorted(folder.glob(f"arm_*_{arm or '*'}_no_geometry.json")):
        yield json.loads(path.read_text())


def steps_from_bench(folder: Path) -> tuple[dict, dict[str, Path]]:
    """case name -> [(box kind, native RSO's change from ISO-100, both without geometry)], and folders."""
    steps, folders, arms = defaultdict(list), {}, {}
    for arm in no_geometry_arms(folder):
        key = (arm["case"]["name"], arm["box"]["kind"], arm["box"]["index"])
        arms.setdefault(key, {})[arm["arm"]] = arm["metrics"]["tre_mm_box"]["mean"]
        folders[arm["case"]["name"]] = Path(arm["case"]["folder"])
    for (case, kind, _), tre in sorted(arms.items()):
        if {"rso_native_no_geometry", "iso_short_no_geometry"} <= tre.keys():
            steps[case].append((kind, tre["rso_native_no_geometry"] - tre["iso_short_no_geometry"]))
    return steps, folders


def counterfactual(folders: list[Path], threshold: float, out: Path) -> None:
    """Native RSO with the scan's rule off on every box of the ruled-out pairs of benchmark ``folders``."""
    from iso_rate_study import pair_inputs

    from rso.core.workflow import build_network, start_session
    from rso.settings import EngineSettings, ISOSettings, RSOSettings

    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    with out.open("w") as handle:
        for case, folder, moving, boxes in _bench_boxes(folders):
            value = case_values(folder)["cbct"]
            if value is None or value < threshold:
                continue
            session = start_session(engine, pair_inputs(folder, moving, "cbct"), network=network)
            session.general()
            session.iso(ISOSettings(iterations=100))
            for kind, index, ras in boxes:
                box = session.box_from_ras(ras)
                before = session.metrics(box=box)["tre_mm_box"]["mean"]
                record = session.rso(box, RSOSettings(scan_rule=False))
                after = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
                row = {"case": case, "kind": kind, "box": index, "modulation": value}
                row.update(tre_before=before, tre_after=after, declined=record.declined)
                handle.write(json.dumps(row) + "\n")
                outcome = record.declined or "kept"
                print(f"{case:32s} {kind:10s} {index} {before:6.2f} -> {after:6.2f}  {outcome}")
                if record.accepted:
                    session.undo()


def _bench_boxes(folders: list[Path]):
    """(case, folder, moving phase, [(kind, index, ras)]) of each case in benchmark result folders."""
    cases = {}
    for folder in folders:
        for arm in no_geometry_arms(folder, "rso_native"):
            case = arm["case"]
            entry = cases.setdefault(case["name"], (Path(case["folder"]), case["moving_phase"], []))
            entry[2].append((arm["box"]["kind"], arm["box"]["index"], arm["box"]["ras"]))
    for name, (folder, moving, boxes) in sorted(cases.items()):
        yield name, folder, moving, boxes


def find_case(name: str, roots: list[Path]) -> Path:
    for root in roots:
        if (root / name).is_dir():
            return root / name
    raise SystemExit(f"case {name} is in none of {', '.join(map(str, roots))}")


def rows_for(steps: dict, folders: dict[str, Path]) -> list[dict]:
    rows = []
    for case, changes in sorted(steps.items()):
        values = case_values(folders[case])
        rows.append(
            {
                "case": case,
                "cbct": values.get("cbct"),
                "ct": values.get("ct"),
                "harmful": [round(c, 2) for k, c in changes if c > HARM_MM],
                "harmful_kinds": [k for k, c in changes if c > HARM_MM],
                "helpful": [round(c, 2) for k, c in changes if c < -HARM_MM],
            }
        )
    return rows


def chosen_threshold(rows: list[dict]) -> dict:
    """The rule of bench/sweep/view-streaks/rule.md on the training rows."""
    harmful = [r["cbct"] for r in rows if r["harmful"]]
    helpful = [r["cbct"] for r in rows if r["helpful"] and not r["harmful"]]
    ct = [r["ct"] for r in rows if r["ct"] is not None]
    high, good = min(harmful), max(helpful, default=0.0)
    if good < high:
        threshold = round(math.sqrt(good * high) / 0.05) * 0.05
    else:
        threshold = math.floor(high / 0.05) * 0.05
    return {
        "H": high,
        "G": good,
        "threshold": round(threshold, 2),
        "ct_max": max(ct, default=None),
        "adopted": not ct or threshold > max(ct),
    }


def print_rows(rows: list[dict], threshold: float | None) -> None:
    print(f"{'case':40s} {'cbct':>6s} {'ct':>6s}  ruled out  harmful (mm)      helpful (mm)")
    for r in rows:
        out = "" if threshold is None or r["cbct"] is None else ("yes" if r["cbct"] >= threshold else "no")
        ct = "" if r["ct"] is None else f"{r['ct']:.3f}"
        print(f"{r['case']:40s} {r['cbct']:6.3f} {ct:>6s}  {out:9s}  {str(r['harmful']):16s}  {r['helpful']}")
    if threshold is not None:
        kept = [r for r in rows if r["cbct"] is not None and r["cbct"] < threshold]
        print(
            f"threshold {threshold}: harmful steps left {sum(len(r['harmful']) for r in kept)} of "
            f"{sum(len(r['harmful']) for r in rows)}, helpful left {sum(len(r['helpful']) for r in kept)} of "
            f"{sum(len(r['helpful']) for r in rows)}; CT pairs ruled out "
            f"{sum(r['ct'] is not None and r['ct'] >= threshold for r in rows)} of "
            f"{sum(r['ct'] is not None for r in rows)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=Path, help="the guard study's no-geometry JSON lines")
    parser.add_argument("--cases-root", type=Path, nargs="+", default=[], help="where --records' cases lie")
    parser.add_argument("--bench", type=Path, nargs="+", default=[], help="benchmark result folders")
    parser.add_argument("--case", type=Path, nargs="+", default=[], help="case folders: values only")
    parser.add_argument("--threshold", type=float, help="a frozen threshold to score")
    parser.add_argument("--out", type=Path, help="write the rows (and the chosen threshold) as JSON")
    parser.add_argument("--counterfactual", type=Path, help="replay ruled-out --bench pairs, rule off")
    args = parser.parse_args()
    if args.counterfactual:
        counterfactual(args.bench, args.threshold, args.counterfactual)
        return
    steps, folders = defaultdict(list), {}
    if args.records:
        for case, changes in steps_from_records(args.records).items():
            steps[case] += changes
            folders[case] = find_case(case, args.cases_root)
    for folder in args.bench:
        found, where = steps_from_bench(folder)
        for case, changes in found.items():
            steps[case] += changes
        folders.update(where)
    for folder in args.case:
        steps.setdefault(folder.name, [])
        folders[folder.name] = folder
    rows = rows_for(steps, folders)
    result = {"rows": rows}
    threshold = args.threshold
    if args.records and threshold is None:
        result["rule"] = chosen_threshold(rows)
        threshold = result["rule"]["threshold"]
        print(json.dumps(result["rule"]))
    print_rows(rows, threshold)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
