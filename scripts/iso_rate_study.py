"""ISO's learning rate with the truth-tuned general model (#20; the rule: bench/sweep/iso-rate/rule.md).

For each case of the training anatomies (``--case``, folders made by ``rso-registration simulate``) and
each pair kind (``cbct``: the cone-beam phases without projection geometry, where ISO runs unguarded;
``ct``: the case's CT phases, a user with clean 4D CT), ISO from the general model at one learning
rate, the whole-lung TRE (mm) read after 0 (the general model), 25, 50 and 100 iterations. One JSON
line per (case, kind, rate); ``--summary`` prints the rule's table.

    python scripts/iso_rate_study.py --rate 1e-4 --case DIR ... --out bench/sweep/iso-rate/study.jsonl
    python scripts/iso_rate_study.py --summary bench/sweep/iso-rate/study.jsonl

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_spec  # noqa: E402

from rso.core.inputs import read_inputs  # noqa: E402
from rso.core.optimize import Feedback, predict, run_iterations  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.settings import EngineSettings, PairInputs  # noqa: E402

CHECKPOINTS = (0, 25, 50, 100)
KINDS = ("cbct", "ct")


def pair_inputs(folder: Path, moving: int, kind: str) -> dict:
    """Phase 0 and ``moving`` of the case's cone-beam (``cbct``) or CT (``ct``) images, no geometry."""
    return read_inputs(
        PairInputs(
            fixed=str(folder / f"{kind}_phase0.nii.gz"),
            moving=str(folder / f"{kind}_phase{moving}.nii.gz"),
            reference=str(folder / "ct_phase0.nii.gz"),
            truth=str(folder / f"truth_0_{moving}.nii.gz"),
            metrics_mask=str(folder / "lung_mask.nii.gz"),
        )
    )


def run_pair(engine, network, folder: Path, moving: int, kind: str, rate: float) -> dict:
    session = start_session(engine, pair_inputs(folder, moving, kind), network=network)
    session.general()
    fixed, moving_t = session.pair.network_inputs(False)
    net = copy.deepcopy(session.net)
    loss_fn = session._context().loss
    optimizer = torch.optim.Adam(net.parameters(), lr=rate)

    def loss() -> torch.Tensor:
        displacement = net(fixed, moving_t)
        return loss_fn(fixed, net.warp(moving_t, displacement), displacement, None)

    row, done = {"case": folder.name, "kind": kind, "rate": rate}, 0
    for n in CHECKPOINTS:
        if n > done:
            net.train()
            run_iterations(optimizer, loss, n - done, Feedback("iso"))
            done = n
        with torch.no_grad():
            field = predict(net, fixed, moving_t)[0].cpu().numpy()
        row[f"tre_{n}"] = session.metrics(field_voxels=field)["tre_mm"]["mean"]
    return row


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    last = f"tre_{CHECKPOINTS[-1]}"
    today = {(r["case"], r["kind"]): r[last] for r in rows if r["rate"] == 3e-4}
    print(f"mean whole-lung TRE (mm) after ISO-{CHECKPOINTS[-1]}; general model {_mean(rows, 'tre_0')}")
    for rate in sorted({r["rate"] for r in rows}, reverse=True):
        chosen = [r for r in rows if r["rate"] == rate]
        by_kind = ", ".join(f"{k} {_mean([r for r in chosen if r['kind'] == k], last)}" for k in KINDS)
        worst = max(r[last] - today[(r["case"], r["kind"])] for r in chosen)
        print(f"  rate {rate:g}: all {_mean(chosen, last)} ({by_kind}); worst pair against 3e-4 {worst:+.2f}")


def _mean(rows: list[dict], key: str) -> str:
    return f"{np.mean([r[key] for r in rows]):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="case folder[:moving phase]")
    parser.add_argument("--rate", type=float, default=3e-4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    record_pairs(args.case, args.out, lambda *pair: run_pair(*pair, args.rate))


def record_pairs(cases: list[str], out: Path, run, kinds: tuple = KINDS) -> None:
    """One JSON line per (case, pair kind in ``kinds``): ``run(engine, network, folder, moving, kind)``'s row
    and its seconds, appended to ``out`` as each pair ends (fp32 on the CPU, the bundled model)."""
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for spec in cases:
            folder, moving = case_spec(spec)
            for kind in kinds:
                start = time.perf_counter()
                row = run(engine, network, folder, moving, kind)
                row["seconds"] = round(time.perf_counter() - start)
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
