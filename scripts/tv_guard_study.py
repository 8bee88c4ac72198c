"""What a guard could see on TV phases beyond the box's own similarity (#20): second opinions.

On half-fan (TrueBeam-like) TV phases a wrong correction explains as much of a box's difference as a
right one does on XVI-like phases (docs/decisions.md, 2026-12-04), so the guard's gain cannot tell
them apart. For each case of the training anatomies (``--case DIR[:K]``, folders made by
``rso-registration simulate``; a TV case is registered without geometry, an FDK case with it), ISO-100
from the general model, then on misaligned, residual and control boxes (40 mm, picked on ISO-100's
field) native RSO with the guard off (``min_gain=0``, no second opinion, no return). Its correction
is scored by

* the gains of ``scripts/guard_study.py``'s views (MIND after 2, 4 or 6 mm pre-smoothing, LNCC, MSE);
* second opinions: the same step optimised under another similarity (``SECOND_OPINIONS``), each with
  its box TRE and its disagreement with the step's correction (mean vector distance in the box, mm).

One JSON line per (case, box); ``--summary`` replays rules ``gain >= a and agreement`` offline.

    python scripts/tv_guard_study.py --case DIR ... --out bench/sweep/tv-guard/runs.jsonl
    python scripts/tv_guard_study.py --summary bench/sweep/tv-guard/runs.jsonl

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402
from guard_study import view_gains  # noqa: E402

from rso.core.native import window_grid  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings, ISOSettings, RSOSettings  # noqa: E402

BOXES = (("misaligned", 3), ("residual", 2), ("control", 3))
SECOND_OPINIONS = {
    "lncc": {"similarity": "lncc"},
    "mind4": {"presmooth_mm": 4.0},
}
UNGUARDED = {"min_gain": 0.0, "max_disagreement_mm": 0.0, "returns": False}
log = logging.getLogger("tv_guard_study")


def box_correction(session, box) -> np.ndarray:
    """(N, 3) LPS mm: the last step's correction at the box's voxels."""
    _, box_voxels, _ = window_grid(session.grid, box, RSOSettings().blend_margin_mm)
    return session.state.patches[-1].delta_mm[box_voxels.slices].reshape(-1, 3)


def second_opinion(session, box, settings: dict, reference: np.ndarray | None) -> dict:
    """The step under another similarity: its box TRE, seconds and disagreement with ``reference``."""
    started = time.perf_counter()
    record = session.rso(box, RSOSettings(**UNGUARDED, **settings))
    row = {"seconds": round(time.perf_counter() - started, 2), "accepted": record.accepted}
    if record.accepted:
        row["tre"] = record.metrics["tre_mm_box"]["mean"]
        mine = box_correction(session, box)
        row["length_mm"] = float(np.linalg.norm(mine, axis=1).mean())
        if reference is not None:
            row["disagreement_mm"] = float(np.linalg.norm(mine - reference, axis=1).mean())
            row["mean_disagreement_mm"] = float(np.linalg.norm(mine.mean(0) - reference.mean(0)))
        session.undo()
    return row


def needed_mm(session, box) -> list[float]:
    """The mean correction the box needs (truth minus the current field, LPS mm) over its lung voxels."""
    inside = session.pair.evaluated(box.voxels.mask(session.grid.shape))
    field = session.grid.voxels_to_mm(session.field_voxels)
    return (session.truth_mm[inside] - field[inside]).mean(axis=0).tolist()


def score_box(session, kind: str, box) -> dict:
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    row = {"kind": kind, "ras": box.ras_corners, "tre_before": before, "needed_mm": needed_mm(session, box)}
    started = time.perf_counter()
    record = session.rso(box, RSOSettings(**UNGUARDED))
    row["seconds"] = round(time.perf_counter() - started, 2)
    row["guard"] = record.guard
    row["tre_refined"] = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
    reference = None
    if record.accepted:
        reference = box_correction(session, box)
        row["length_mm"] = float(np.linalg.norm(reference, axis=1).mean())
        row["mean_mm"] = reference.mean(axis=0).tolist()
        row["gains"] = view_gains(session, box, session.state.patches[-1])
        session.undo()
    row["second"] = {
        name: second_opinion(session, box, settings, reference) for name, settings in SECOND_OPINIONS.items()
    }
    return row


def study(cases: list[str], out: Path) -> None:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["case"] for line in out.read_text().splitlines()} if out.is_file() else set()
    with out.open("a") as handle:
        for spec in cases:
            folder, phase = case_spec(spec)
            if folder.name in done:
                continue
            session = start_session(engine, case_inputs(folder, phase), network=network)
            session.general()
            session.iso(ISOSettings(iterations=100))
            boxes = [(k, b) for k, n in BOXES for b in pick_boxes(session, k, n, 40.0)]
            for index, (kind, box) in enumerate(boxes):
                row = {"case": folder.name, "box": index, **score_box(session, kind, box)}
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                log.info(
                    "%s %s %.2f -> %.2f gain %.3f %s",
                    folder.name,
                    kind,
                    row["tre_before"],
                    row["tre_refined"],
                    (row["guard"] or {}).get("gain", float("nan")),
                    {k: round(v.get("disagreement_mm", float("nan")), 2) for k, v in row["second"].items()},
                )


def kept_by_default(row: dict, min_gain: float = 0.2) -> bool:
    guard = row["guard"] or {}
    return bool(guard) and guard["gain"] >= min_gain and guard["folded_after"] <= guard["folded_before"]


def replay(rows: list[dict], rule) -> dict:
    """Each box's change against ISO-100 (mm) under ``kept_by_default and rule(row)``, per kind."""
    changes = {}
    for row in rows:
        kept = kept_by_default(row) and rule(row)
        after = row["tre_refined"] if kept else row["tre_before"]
        changes.setdefault(row["kind"], []).append(after - row["tre_before"])
    return {
        kind: {
            "median": float(np.median(c)),
            "worst": float(np.max(c)),
            "improved": int(sum(x < -0.5 for x in c)),
            "harmed": int(sum(x > 0.5 for x in c)),
            "n": len(c),
        }
        for kind, c in sorted(changes.items())
    }


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        g, s = r.get("gains", {}), r["second"]
        opinions = " ".join(
            f"{k} {v.get('tre', float('nan')):5.2f}/{v.get('disagreement_mm', float('nan')):4.2f}"
            f"/{v.get('mean_disagreement_mm', float('nan')):4.2f}"
            for k, v in s.items()
        )
        print(
            f"{r['case'][:30]:30s} {r['kind'][:4]} {r['tre_before']:5.2f} -> {r['tre_refined']:5.2f}"
            f" {'K' if kept_by_default(r) else ' '} len {r.get('length_mm', 0):4.2f}"
            + "".join(f" {k} {v:+.2f}" for k, v in g.items())
            + f" | {opinions}"
        )
    rules = {"gain only": lambda r: True}
    for name in SECOND_OPINIONS:
        for limit in (0.5, 0.75, 1.0, 1.5):
            rules[f"{name} mean within {limit}"] = lambda r, n=name, a=limit: (
                r["second"][n].get("mean_disagreement_mm", 99) <= a
            )
            rules[f"{name} within {limit} x length"] = lambda r, n=name, a=limit: (
                r["second"][n].get("disagreement_mm", 99) <= a * r["length_mm"]
            )
    for name, rule in rules.items():
        scored = replay(rows, rule)
        print(
            f"{name:28s} "
            + "; ".join(
                f"{k[:4]} {s['median']:+.2f}/{s['worst']:+.2f} (+{s['improved']} -{s['harmed']}/{s['n']})"
                for k, s in scored.items()
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], metavar="DIR[:K]")
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/tv-guard/runs.jsonl"))
    parser.add_argument("--summary", type=Path, help="replay the rules on a runs file and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.summary:
        summary(args.summary)
    else:
        study(args.case, args.out)


if __name__ == "__main__":
    main()
