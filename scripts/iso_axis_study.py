"""ISO without projection geometry: the share of its change along the body's axis (#20; the rule:
bench/sweep/iso-axis/rule.md).

For each case (``--case``, folders made by ``rso-registration simulate`` or the benchmark) and each pair
kind (``cbct``: the cone-beam phases without geometry, where ISO fits the images as given; ``ct``: the
case's CT phases), ISO-100 from the general model with its guard off; the whole-lung TRE (mm) of the
general model and of ISO, and the guard's statistic, ``rso.core.iso_guard.lung_axis_share`` of ISO's
change. One JSON line per (case, kind). ``--summary`` applies the rule: the threshold is the lowest
multiple of 0.05 above the share of every pair ISO made worse by more than 0.5 mm, or the frozen
``--threshold`` when scoring cases simulated after it was chosen.

    python scripts/iso_axis_study.py --case DIR ... --out bench/sweep/iso-axis/training.jsonl
    python scripts/iso_axis_study.py --summary bench/sweep/iso-axis/training.jsonl
    python scripts/iso_axis_study.py --summary FILE --threshold 0.85

Training anatomies only for choosing; lung2 and fresh seeds only to score a frozen threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iso_rate_study import KINDS, pair_inputs, record_pairs  # noqa: E402

from rso.core.iso_guard import lung_axis_share  # noqa: E402
from rso.core.workflow import start_session  # noqa: E402
from rso.settings import ISOSettings  # noqa: E402

HARM_MM = 0.5


def run_pair(engine, network, folder: Path, moving: int, kind: str) -> dict:
    session = start_session(engine, pair_inputs(folder, moving, kind), network=network)
    session.general()
    start, general = session.field_voxels, session.metrics()["tre_mm"]["mean"]
    session.iso(ISOSettings(iterations=100, guard=False))
    change = session.grid.voxels_to_mm(session.field_voxels - start)
    return {
        "case": folder.name,
        "kind": kind,
        "tre_general": general,
        "tre_iso": session.metrics()["tre_mm"]["mean"],
        "axis_share": lung_axis_share(change, session.pair.fixed_hu, session.pair.fit_grid),
    }


def summary(path: Path, threshold: float | None) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    harmful = [r for r in rows if r["tre_iso"] - r["tre_general"] > HARM_MM]
    helpful = [r for r in rows if r["tre_iso"] - r["tre_general"] < -HARM_MM]
    if threshold is None:
        threshold = 0.05 * np.floor(max(r["axis_share"] for r in harmful) / 0.05 + 1)
        print(f"threshold (lowest multiple of 0.05 above every harmful pair's share): {threshold:.2f}")
    guarded = [r["tre_iso"] if r["axis_share"] >= threshold else r["tre_general"] for r in rows]
    print(f"{len(rows)} pairs at threshold {threshold:.2f}: mean whole-lung TRE (mm)")
    print(f"  never ISO {np.mean([r['tre_general'] for r in rows]):.3f}")
    print(f"  always ISO {np.mean([r['tre_iso'] for r in rows]):.3f}")
    print(f"  guarded {np.mean(guarded):.3f}")
    for kind in KINDS:
        chosen = [g for g, r in zip(guarded, rows) if r["kind"] == kind]
        print(f"  guarded, {kind} pairs ({len(chosen)}): {np.mean(chosen):.3f}")
    kept_harmful = sum(r["axis_share"] >= threshold for r in harmful)
    kept_helpful = sum(r["axis_share"] >= threshold for r in helpful)
    print(f"  ISO made {len(harmful)} pairs worse by > {HARM_MM} mm, kept in {kept_harmful}")
    print(f"  ISO made {len(helpful)} pairs better by > {HARM_MM} mm, kept in {kept_helpful}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="case folder[:moving phase]")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--threshold", type=float, help="a frozen threshold to score (default: choose one)")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary, args.threshold)
        return
    record_pairs(args.case, args.out, run_pair)


if __name__ == "__main__":
    main()
