"""Can the images as given judge ISO on cone-beam streaks? (#20; the study behind ISO's guard)

ISO fine-tunes on the artefact-matched pair. On the cone-beam cases of the benchmark it moved the
general model's better answer away in half the cases (cxr TrueBeam-like: whole-lung TRE 1.54 -> 4.51
mm). The images as given carry other streaks and are not fitted, like a validation set. For each
cone-beam case of the training anatomies (``--case``, folders made by ``rso-registration simulate
--preset xvi|truebeam``), one ISO run from the general model on the matched pair, with the network's
field read every few iterations (``CHECKPOINTS``, 0: the general model): the whole-lung TRE (truth)
beside truth-free dissimilarities of the pair as given (normalised MSE and MIND over the model grid)
and of the fitted pair; and the field ISO starts from in a session, the general step's on the pair as
given (iterations -1). One JSON line per (case, iterations); ``--summary`` replays ISO's guard (keep
ISO-N where the images as given agree better than under the start) and early-stopping rules.

    python scripts/conebeam_iso_study.py --case DIR ... --out bench/sweep/conebeam-iso/runs.jsonl
    python scripts/conebeam_iso_study.py --summary bench/sweep/conebeam-iso/runs.jsonl

(bench/sweep/conebeam-iso/: seven cases to ISO-500, the last three with ``--last 100`` for time.)

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402

from rso.core.mind import mind_ssc  # noqa: E402
from rso.core.optimize import Feedback, predict, run_iterations  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.options import PAPER_LEARNING_RATE  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

NO_GEOMETRY = {"fixed_geometry": None, "moving_geometry": None}
CHECKPOINTS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 300, 400, 500)
log = logging.getLogger("conebeam_iso_study")


@torch.no_grad()
def dissimilarities(net, pair, field: torch.Tensor, inputs: dict) -> dict:
    """Normalised MSE and MIND between fixed and warped moving, per named pair of network inputs."""
    out = {}
    for name, (fixed, moving) in inputs.items():
        warped = net.warp(moving, field)
        out[f"mse_{name}"] = float(torch.mean((warped - fixed) ** 2))
        out[f"mind_{name}"] = float(torch.mean((mind_ssc(warped) - mind_ssc(fixed)) ** 2))
    return out


def run_case(engine, network, folder: Path, phase: int, handle, last: int) -> None:
    session = start_session(engine, case_inputs(folder, phase), network=network)
    session.general()
    pair = session.pair
    fitted = pair.network_inputs(True)
    inputs = {"given": pair.network_inputs(False), "fitted": fitted}
    net = copy.deepcopy(session.net)
    loss_fn = session._context().loss
    optimizer = torch.optim.Adam(net.parameters(), lr=PAPER_LEARNING_RATE)

    def loss() -> torch.Tensor:
        displacement = net(*fitted)
        return loss_fn(fitted[0], net.warp(fitted[1], displacement), displacement, None)

    done = 0
    for n in (c for c in CHECKPOINTS if c <= last):
        if n > done:
            net.train()
            run_iterations(optimizer, loss, n - done, Feedback("iso"))
            done = n
        field = predict(net, *fitted)
        row = {
            "case": folder.name,
            "iterations": n,
            "tre_mm": session.metrics(field[0].cpu().numpy())["tre_mm"]["mean"],
            **dissimilarities(net, pair, field, inputs),
        }
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        log.info("%s", row)


def start_row(engine, network, folder: Path, phase: int) -> dict:
    """The field ISO starts from in a session (the general step's, on the pair as given): iterations -1."""
    session = start_session(engine, {**case_inputs(folder, phase), **NO_GEOMETRY}, network=network)
    session.general()
    field = torch.from_numpy(session.field_voxels)[None]
    given = {"given": session.pair.network_inputs(False)}
    row = {"case": folder.name, "iterations": -1, "tre_mm": session.metrics()["tre_mm"]["mean"]}
    return {**row, **dissimilarities(session.net, session.pair, field, given)}


def study(cases: list[str], out: Path, starts_only: bool = False, last: int = CHECKPOINTS[-1]) -> None:
    engine = EngineSettings(device="cpu")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for spec in cases:
            folder, phase = case_spec(spec)
            handle.write(json.dumps(start_row(engine, network, folder, phase)) + "\n")
            if not starts_only:
                run_case(engine, network, folder, phase, handle, last)


def pick(rows: list[dict], key: str, margin: float, last: int) -> dict:
    """The checkpoint a rule keeps: the latest N <= ``last`` whose ``key`` is within ``margin`` (relative)
    of the lowest among them, so that a flat curve does not stop ISO early."""
    mine = [r for r in rows if 0 <= r["iterations"] <= last]
    lowest = min(r[key] for r in mine)
    return max((r for r in mine if r[key] <= lowest * (1 + margin)), key=lambda r: r["iterations"])


def guard_replay(by_case: dict, at: dict, last: int) -> None:
    """ISO-``last`` kept only where the images as given agree better (MIND) than under the start field."""
    kept = {}
    for case in by_case:
        start, iso = at[case][-1], at[case][last]
        kept[case] = iso if iso["mind_given"] < start["mind_given"] else start
    tre = [kept[c]["tre_mm"] for c in by_case]
    diff = np.subtract(tre, [at[c][last]["tre_mm"] for c in by_case])
    start_diff = np.subtract(tre, [at[c][-1]["tre_mm"] for c in by_case])
    print(
        f"  guard (given MIND below the start's): median {np.median(tre):.2f}, against ISO: worse "
        f"{int(sum(diff > 0.1))} (worst {diff.max():+.2f}), better {int(sum(diff < -0.1))} (best "
        f"{diff.min():+.2f}); against the start: worst {start_diff.max():+.2f}; kept ISO in "
        f"{[c for c in by_case if kept[c] is at[c][last]]}"
    )


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    cases = sorted({r["case"] for r in rows})
    by_case = {c: sorted((r for r in rows if r["case"] == c), key=lambda r: r["iterations"]) for c in cases}
    at = {c: {r["iterations"]: r for r in by_case[c]} for c in cases}
    for c in cases:
        curve = " ".join(f"{r['iterations']}:{r['tre_mm']:.2f}" for r in by_case[c])
        print(f"{c:30s} {curve}")
    for last in (100, 500):
        cases = [c for c in by_case if last in at[c]]
        base = [at[c][last]["tre_mm"] for c in cases]
        print(f"\nISO-{last}: TRE median {np.median(base):.2f}, cases {np.round(base, 2).tolist()}")
        with_start = {c: by_case[c] for c in cases if -1 in at[c]}
        if with_start:
            guard_replay(with_start, at, last)
        for key in ("mse_given", "mind_given"):
            for margin in (0.0, 0.005, 0.01, 0.02):
                picked = [pick(by_case[c], key, margin, last) for c in cases]
                tre = [r["tre_mm"] for r in picked]
                diff = np.subtract(tre, base)
                print(
                    f"  {key:10s} margin {margin:.3f}: median {np.median(tre):.2f}, "
                    f"worse {int(sum(diff > 0.1))} (worst {diff.max():+.2f}), "
                    f"better {int(sum(diff < -0.1))} (best {diff.min():+.2f}),"
                    f" N {[r['iterations'] for r in picked]}"
                )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="FOLDER[:MOVING_PHASE]")
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/conebeam-iso/runs.jsonl"))
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--starts-only", action="store_true", help="only the start rows (iterations -1)")
    parser.add_argument("--last", type=int, default=CHECKPOINTS[-1], help="the last checkpoint to run")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        study(args.case, args.out, args.starts_only, args.last)


if __name__ == "__main__":
    main()
