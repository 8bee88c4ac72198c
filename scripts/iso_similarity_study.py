"""ISO's similarity on cone-beam phases: MSE (today) against LNCC and MIND (#20; the rule:
bench/sweep/iso-similarity/rule.md).

For each case (``--case DIR[:K]``, made by ``rso-registration simulate``, both geometry files) and each
variant (``--variant SIMILARITY:SMOOTHNESS``, repeatable), one session from the general model's field:
ISO-100 on the artefact-matched pair, unguarded, with its guard's statistic (``given_gain`` on the images as
given), undone; then ISO-100 on the images as given, unguarded, with the no-geometry guard's statistic
(``lung_axis_share`` of its change). One JSON line per (case, variant): whole-lung TRE (mm) and seconds of
each fit. ``--summary FILE[:FILE...]`` applies each path's guard and the rule.

``--ct`` registers each case's clean CT phases instead (no geometry: ISO on the images as given only, the
``matched`` entry null), the rule's check that a candidate does not cost CT pairs.

``--baseline-from TRAINING UNGUARDED --out FILE`` writes MSE's rows from ``scripts/iso_vendor_study.py``'s
records of the same cases (its rows and its ``--matched-only`` rows; a matched fit's unguarded TRE is null
where neither has it, and its seconds are null).

    python scripts/iso_similarity_study.py --variant mind:0.01 \
        --case ~/.cache/rso-registration/cases/iso-console/cxr-xvi-vendor-seed121:5 ... \
        --out bench/sweep/iso-similarity/mind.jsonl
    python scripts/iso_similarity_study.py --ct --variant mse:0.01 --variant mind:0.01 --case ... \
        --out bench/sweep/iso-similarity/ct.jsonl
    python scripts/iso_similarity_study.py --baseline-from bench/sweep/iso-console/training.jsonl \
        bench/sweep/iso-console/matched-unguarded.jsonl --out bench/sweep/iso-similarity/mse.jsonl
    python scripts/iso_similarity_study.py \
        --summary bench/sweep/iso-similarity/mse.jsonl:bench/sweep/iso-similarity/mind.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from iso_rate_study import record_pairs  # noqa: E402

from rso.core.inputs import read_inputs  # noqa: E402
from rso.core.iso_guard import given_gain, lung_axis_share  # noqa: E402
from rso.core.workflow import start_session  # noqa: E402
from rso.options import ISO_MIN_AXIS_SHARE, ISO_MIN_GIVEN_GAIN  # noqa: E402
from rso.settings import EngineSettings, ISOSettings, PairInputs  # noqa: E402

ITERATIONS = 100
HARM_MM = 0.5  # the rule: no case worse than the general model by more than this (guarded)
MIN_GAIN_MM = 0.10  # the rule: a candidate's mean below MSE's by at least this, on both paths
MAX_TIME_RATIO = 3.0  # the rule: at most this many times MSE's median seconds per ISO-100
BASELINE = "mse:0.01"


def run_case(network, folder: Path, moving: int, variant: str) -> dict:
    session = start_session(_engine(variant), case_inputs(folder, moving), network=network)
    if not session.geometry:
        raise SystemExit(f"{folder}: the study needs both phases' geometry files")
    session.general()
    start_voxels, general = session.field_voxels, _tre(session)
    start = torch.from_numpy(start_voxels)[None]
    matched = _fit(session, match_artefacts=True)
    pair = session.pair
    proposed = torch.from_numpy(session.field_voxels)[None]
    matched["given_gain"] = round(
        given_gain(session.net.warp, pair.network_inputs(False), start, proposed, pair.fit_t), 4
    )
    session.undo()
    return {
        "case": folder.name,
        "moving": moving,
        "variant": variant,
        "tre_general": general,
        "matched": matched,
        "given": _given_fit(session, start_voxels),
    }


def run_ct(network, folder: Path, moving: int, variant: str) -> dict:
    """ISO-100 on the case's clean CT phases (as given, unguarded) with its axis share."""
    inputs = PairInputs(
        fixed=str(folder / "ct_phase0.nii.gz"),
        moving=str(folder / f"ct_phase{moving}.nii.gz"),
        truth=str(folder / f"truth_0_{moving}.nii.gz"),
        metrics_mask=str(folder / "lung_mask.nii.gz"),
    )
    session = start_session(_engine(variant), read_inputs(inputs), network=network)
    session.general()
    start_voxels, general = session.field_voxels, _tre(session)
    row = {"case": f"{folder.name}-ct", "moving": moving, "variant": variant, "tre_general": general}
    return row | {"matched": None, "given": _given_fit(session, start_voxels)}


def _engine(variant: str) -> EngineSettings:
    similarity, smoothness = variant.split(":")
    return EngineSettings(
        device="cpu", precision="fp32", network_similarity=similarity, network_smoothness=float(smoothness)
    )


def _given_fit(session, start_voxels) -> dict:
    """ISO-100 on the images as given (unguarded) and the no-geometry guard's statistic of its change."""
    given = _fit(session, match_artefacts=False)
    change = session.grid.voxels_to_mm(session.field_voxels - start_voxels)
    given["axis_share"] = lung_axis_share(change, session.pair.fixed_hu, session.pair.fit_grid)
    return given


def _fit(session, match_artefacts: bool) -> dict:
    began = time.perf_counter()
    session.iso(ISOSettings(iterations=ITERATIONS, match_artefacts=match_artefacts, guard=False))
    return {"tre": _tre(session), "seconds": round(time.perf_counter() - began, 1)}


def _tre(session) -> float:
    return session.metrics()["tre_mm"]["mean"]


def guarded(row: dict) -> dict:
    """Each path's whole-lung TRE (mm) with its guard applied (the general model's where declined)."""
    general, matched, given = row["tre_general"], row["matched"], row["given"]
    share = given["axis_share"]
    out = {"given": given["tre"] if share is not None and share >= ISO_MIN_AXIS_SHARE else general}
    if matched is not None:
        out["matched"] = matched["tre"] if matched["given_gain"] >= ISO_MIN_GIVEN_GAIN else general
    return out


def baseline_rows(training: Path, unguarded: Path) -> list[dict]:
    """MSE's rows (variant ``BASELINE``) from the iso-vendor study's records of the same cases."""
    loose = {row["case"]: row["tre_matched_unguarded"] for row in _lines(unguarded)}
    rows = []
    for row in _lines(training):
        matched = row["matched"]
        fitted = matched["tre"] if matched["kept"] else loose.get(row["case"])
        rows.append(
            {
                "case": row["case"],
                "moving": row["moving"],
                "variant": BASELINE,
                "tre_general": row["tre_general"],
                "matched": {"tre": fitted, "seconds": None, "given_gain": matched["given_gain"]},
                "given": {
                    "tre": row["given"]["tre"],
                    "seconds": None,
                    "axis_share": row["given"]["axis_share"],
                },
                "source": f"{training.name} ({unguarded.name})",
            }
        )
    return rows


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for part in str(path).split(":") for line in Path(part).read_text().splitlines()]


def summary(path: Path) -> None:
    rows = _lines(path)
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    cases = list(dict.fromkeys(row["case"] for row in rows))
    table = {(row["case"], row["variant"]): row for row in rows}
    cases = [case for case in cases if all((case, v) in table for v in variants)]
    for ct in (False, True):
        chosen = [case for case in cases if case.endswith("-ct") == ct]
        if chosen:
            paths = ("given",) if ct else ("matched", "given")
            kind = "CT-phase" if ct else "CBCT"
            print(f"\n{len(chosen)} {kind} cases; whole-lung TRE (mm), guarded (unguarded)")
            print(f"{'case':38s} general " + " ".join(f"{v:>26s}" for v in variants))
            for case in chosen:
                cells = [_cell(table[case, v], paths) for v in variants]
                general = table[case, variants[0]]["tre_general"]
                print(f"{case:38s} {general:6.2f}  " + " ".join(f"{c:>26s}" for c in cells))
            score(chosen, variants, table, paths)


def _cell(row: dict, paths: tuple) -> str:
    g = guarded(row)
    return " ".join(f"{g[path]:5.2f}({_mm(row[path]['tre'])})" for path in paths)


def _mm(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def score(cases: list[str], variants: list[str], table: dict, paths: tuple) -> None:
    stats = {}
    for v in variants:
        rows = [table[c, v] for c in cases]
        out = [guarded(row) for row in rows]
        seconds = [row[p]["seconds"] for row in rows for p in paths if row[p]["seconds"] is not None]
        stats[v] = {
            path: {
                "mean": float(np.mean([o[path] for o in out])),
                "worst": max(o[path] - row["tre_general"] for o, row in zip(out, rows)),
                "unguarded": _mean([row[path]["tre"] for row in rows]),
            }
            for path in paths
        } | {"seconds": float(np.median(seconds)) if seconds else None}
    base = stats.get(BASELINE)
    for v, s in stats.items():
        line = f"{v:12s} median {s['seconds'] or float('nan'):6.1f} s"
        for path in paths:
            p = s[path]
            line += f" | {path}: mean {p['mean']:.3f} (unguarded {_mm(p['unguarded'])})"
            line += f", worst vs general {p['worst']:+.2f}"
        if base and v != BASELINE:
            line += f" | qualifies: {qualifies(s, base, paths)}"
        print(line)


def _mean(values: list) -> float | None:
    """The mean of the values, or None where one is missing (a fit not recorded unguarded)."""
    return None if any(value is None for value in values) else float(np.mean(values))


def qualifies(candidate: dict, base: dict, paths: tuple) -> dict:
    """The rule's tests. CBCT: each path's mean at least ``MIN_GAIN_MM`` below MSE's, none worse than the
    general model by more than ``HARM_MM``, time. CT phases (given only): the mean no more than
    ``MIN_GAIN_MM`` above MSE's, the same harm test."""
    ct = paths == ("given",)
    verdict = {}
    for path in paths:
        mean, worst = candidate[path]["mean"], candidate[path]["worst"]
        bound = base[path]["mean"] + (MIN_GAIN_MM if ct else -MIN_GAIN_MM)
        verdict[path] = mean <= bound and worst <= HARM_MM
    if ct or base["seconds"] is None or candidate["seconds"] is None:
        return verdict
    return verdict | {"time": candidate["seconds"] <= MAX_TIME_RATIO * base["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="case folder[:moving phase]")
    parser.add_argument("--variant", action="append", default=[], help="SIMILARITY:SMOOTHNESS")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--ct", action="store_true", help="the cases' clean CT phases, as given only")
    parser.add_argument("--baseline-from", type=Path, nargs=2, metavar=("TRAINING", "UNGUARDED"))
    args = parser.parse_args()
    if args.baseline_from:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in baseline_rows(*args.baseline_from)))
        return
    if args.summary:
        summary(args.summary)
        return
    run = run_ct if args.ct else run_case
    # One row per (case, variant): the "kinds" of iso_rate_study's loop are this study's variants.
    record_pairs(args.case, args.out, lambda _, *row: run(*row), kinds=tuple(args.variant))


if __name__ == "__main__":
    main()
