"""ISO's whole-image step where the projection geometry is known: on the artefact-matched pair (today) or on
the images as given (#20; the rule: bench/sweep/iso-vendor/rule.md).

For each case (``--case DIR[:K]``, made by ``rso-registration simulate``), one session with both geometry
files from the general model's field: ISO-100 on the matched pair with its guard (the images as given must
prefer it by ``ISO_MIN_GIVEN_GAIN``), undone, then ISO-100 on the images as given with no guard and the
no-geometry guard's statistic, ``rso.core.iso_guard.lung_axis_share`` of its change. One JSON line per case
with the whole-lung TRE (mm) of each. ``--summary`` scores the rule's candidates: A (today), B (A, then the
images as given where A keeps the start) and C (the images as given only), each kept by its guard.

    python scripts/iso_vendor_study.py --case DIR:5 ... --out bench/sweep/iso-vendor/training.jsonl
    python scripts/iso_vendor_study.py --summary bench/sweep/iso-vendor/training.jsonl
    python scripts/iso_vendor_study.py --matched-only --case DIR:5 ... --out FILE

``--matched-only`` records the general model's and matched ISO-100's whole-lung TRE with ISO's guard off:
a diagnosis of held-out cases (what the guard declined), never a choice. Training anatomies only for
choosing.

``--cross`` (bench/sweep/iso-console/rule-2.md) records ISO-100 on the images as given with its gain on the
artefact-matched pair (``rso.core.iso_guard.given_gain`` there: the pair it did not fit), and ``--summary
FILE --cross-file CROSS`` scores candidate D: A, then where A keeps the start, ISO on the images as given
where that gain exceeds ``ISO_MIN_GIVEN_GAIN``.

    python scripts/iso_vendor_study.py --cross --case DIR:5 ... --out bench/sweep/iso-console/cross.jsonl
    python scripts/iso_vendor_study.py --summary \
        bench/sweep/iso-vendor/training.jsonl:bench/sweep/iso-console/training.jsonl \
        --cross-file bench/sweep/iso-console/cross.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from iso_rate_study import record_pairs  # noqa: E402

from rso.core.iso_guard import given_gain, lung_axis_share  # noqa: E402
from rso.core.workflow import start_session  # noqa: E402
from rso.options import ISO_MIN_AXIS_SHARE, ISO_MIN_GIVEN_GAIN  # noqa: E402
from rso.settings import ISOSettings  # noqa: E402

ITERATIONS = 100
HARM_MM = 0.5


def run_case(engine, network, folder: Path, moving: int) -> dict:
    session = start_session(engine, case_inputs(folder, moving), network=network)
    if not session.geometry:
        raise SystemExit(f"{folder}: the study needs both phases' geometry files")
    session.general()
    start, general = session.field_voxels, _tre(session)
    record = session.iso(ISOSettings(iterations=ITERATIONS, guard=True))
    matched = {"tre": _tre(session), "given_gain": record.params.get("given_gain")}
    matched["kept"] = record.params.get("kept") != "start"
    session.undo()
    session.iso(ISOSettings(iterations=ITERATIONS, match_artefacts=False, guard=False))
    change = session.grid.voxels_to_mm(session.field_voxels - start)
    pair = session.pair
    given = {"tre": _tre(session), "axis_share": lung_axis_share(change, pair.fixed_hu, pair.fit_grid)}
    return {"case": folder.name, "moving": moving, "tre_general": general, "matched": matched, "given": given}


def run_matched(engine, network, folder: Path, moving: int) -> dict:
    """The general model's and unguarded matched ISO-100's whole-lung TRE (mm) on one case."""
    session = start_session(engine, case_inputs(folder, moving), network=network)
    session.general()
    general = _tre(session)
    session.iso(ISOSettings(iterations=ITERATIONS, guard=False))
    matched = _tre(session)
    return {"case": folder.name, "moving": moving, "tre_general": general, "tre_matched_unguarded": matched}


def run_cross(engine, network, folder: Path, moving: int) -> dict:
    """ISO-100 on the images as given (unguarded) from the general model's field: its whole-lung TRE (mm)
    and the share of the matched pair's dissimilarity its field removes against the start."""
    session = start_session(engine, case_inputs(folder, moving), network=network)
    session.general()
    start = torch.from_numpy(session.field_voxels)[None]
    session.iso(ISOSettings(iterations=ITERATIONS, match_artefacts=False, guard=False))
    proposed = torch.from_numpy(session.field_voxels)[None]
    pair = session.pair
    cross = given_gain(session.net.warp, pair.network_inputs(True), start, proposed, pair.fit_t)
    given = {"tre": _tre(session), "matched_gain": round(cross, 4)}
    return {"case": folder.name, "moving": moving, "given": given}


def _tre(session) -> float:
    return session.metrics()["tre_mm"]["mean"]


def outcomes(row: dict) -> dict:
    """Each candidate's whole-lung TRE on one case (its guard applied)."""
    general, matched, given = row["tre_general"], row["matched"], row["given"]
    c = given["tre"] if given["axis_share"] >= ISO_MIN_AXIS_SHARE else general
    a = matched["tre"]
    return {"A": a, "B": a if matched["kept"] else c, "C": c}


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    scored = [outcomes(row) for row in rows]
    print(f"{'case':42s} general  A matched (gain)    as given (share)    B      C")
    for row, out in zip(rows, scored):
        m, g = row["matched"], row["given"]
        print(
            f"{row['case']:42s} {row['tre_general']:6.2f} {out['A']:6.2f} ({m['given_gain']:+.3f})"
            f"  {g['tre']:6.2f} ({g['axis_share']:.3f})  {out['B']:6.2f} {out['C']:6.2f}"
        )
    means = {key: np.mean([out[key] for out in scored]) for key in "ABC"}
    print("mean whole-lung TRE (mm): " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    for key in "BC":
        worst = max(out[key] - out["A"] for out in scored)
        qualifies = means[key] < means["A"] and worst <= HARM_MM
        print(f"{key}: worst case against A {worst:+.2f} mm; qualifies by the rule: {qualifies}")


def cross_summary(path: Path, cross_paths: list[Path]) -> None:
    """Candidate D against A over the cases of ``path`` (rows of ``run_case``, several files joined with
    ``:``) and their rows of ``run_cross``."""
    rows = [json.loads(line) for part in str(path).split(":") for line in Path(part).read_text().splitlines()]
    cross = {}
    for cross_path in cross_paths:
        cross |= {row["case"]: row for row in map(json.loads, cross_path.read_text().splitlines())}
    print(f"{'case':42s} general  A      as given (matched gain)  D")
    pairs = []
    for row in rows:
        a, given = row["matched"]["tre"], cross[row["case"]]["given"]
        kept = not row["matched"]["kept"] and given["matched_gain"] > ISO_MIN_GIVEN_GAIN
        d = given["tre"] if kept else a
        print(
            f"{row['case']:42s} {row['tre_general']:6.2f} {a:6.2f}  {given['tre']:6.2f}"
            f" ({given['matched_gain']:+.3f})  {d:6.2f}"
        )
        pairs.append((a, d))
    a_mean, d_mean = np.mean(pairs, axis=0)
    worst = max(d - a for a, d in pairs)
    print(f"{len(rows)} cases: mean whole-lung TRE A {a_mean:.3f}, D {d_mean:.3f} mm")
    qualifies = d_mean < a_mean and worst <= HARM_MM
    print(f"D: worst case against A {worst:+.2f} mm; qualifies by the rule: {qualifies}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="case folder[:moving phase]")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--matched-only", action="store_true", help="matched ISO unguarded (a diagnosis)")
    parser.add_argument("--cross", action="store_true", help="ISO as given, judged by the matched pair")
    parser.add_argument("--cross-file", type=Path, action="append", default=[], help="--summary: score D")
    args = parser.parse_args()
    if args.summary and args.cross_file:
        cross_summary(args.summary, args.cross_file)
        return
    if args.summary:
        summary(args.summary)
        return
    run = run_matched if args.matched_only else run_cross if args.cross else run_case
    # One row per case: the pair kinds are those of this study, fitted or as given, within each row.
    record_pairs(args.case, args.out, lambda *pair: run(*pair[:4]), kinds=("cbct",))


if __name__ == "__main__":
    main()
