"""Can ISO be judged without projection geometry? (#20: the no-geometry path, a study)

Without both geometry files ISO fine-tunes on the images as given and has no guard: on the cone-beam
benchmark it made the whole-lung TRE of every TrueBeam-like case worse (up to 1.52 -> 5.30 mm). ISO fits
MSE; MIND, a structural similarity it does not fit, may still tell a fit of the streaks from a fit of
the anatomy. For each cone-beam pair of the training anatomies (``--case DIR[:K]``, repeatable), ISO-100
without geometry from the general model, and beside the whole-lung TRE before and after: the MIND gain on
the images as given (``rso.core.iso_guard.given_gain``, the fit mask, the model grid) and ISO's own MSE
gain. One JSON line per pair; ``--summary`` replays thresholds on the MIND gain.

    python scripts/iso_no_geometry_guard_study.py --case DIR:3 --case DIR:5 ... --out runs.jsonl
    python scripts/iso_no_geometry_guard_study.py --summary runs.jsonl

lung2, the held-out patient, is never used to choose.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402

from rso.core.iso_guard import given_gain  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

log = logging.getLogger("iso_no_geometry_guard_study")
ISO_ITERATIONS = 100
THRESHOLDS = (-0.02, -0.01, 0.0, 0.01, 0.02, 0.05)


def mse_gain(net, given, start: torch.Tensor, proposed: torch.Tensor) -> float:
    fixed, moving = given
    before = float(torch.mean((net.warp(moving, start) - fixed) ** 2))
    return 1.0 - float(torch.mean((net.warp(moving, proposed) - fixed) ** 2)) / max(before, 1e-12)


@torch.no_grad()
def gains(session, start: np.ndarray, proposed: np.ndarray) -> dict:
    pair, warp = session.pair, session.net.warp
    given = pair.network_inputs(False)
    fields = [torch.from_numpy(f)[None].to(given[0]) for f in (start, proposed)]
    return {
        "mind_gain": given_gain(warp, given, *fields, pair.fit_t),
        "mse_gain": mse_gain(session.net, given, *fields),
    }


def run_pair(engine, network, folder: Path, phase: int) -> dict:
    inputs = case_inputs(folder, phase)
    inputs = {**inputs, "fixed_geometry": None, "moving_geometry": None}
    session = start_session(engine, inputs, network=network)
    session.general()
    start, before = session.field_voxels.copy(), session.metrics()["tre_mm"]["mean"]
    began = time.perf_counter()
    session.iso(ISO_ITERATIONS)
    after = session.metrics()["tre_mm"]["mean"]
    preset = json.loads((folder / "case.json").read_text()).get("preset")
    row = {"case": folder.name, "phase": phase, "preset": preset, "tre_general": before, "tre_iso": after}
    row |= gains(session, start, session.field_voxels) | {"iso_seconds": time.perf_counter() - began}
    log.info("%s", row)
    return row


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in sorted(rows, key=lambda r: r["mind_gain"]):
        change = r["tre_iso"] - r["tre_general"]
        print(
            f"{r['case']:34s} 0->{r['phase']} MIND gain {r['mind_gain']:+.3f} MSE gain {r['mse_gain']:+.3f}"
            f"  TRE {r['tre_general']:.2f} -> {r['tre_iso']:.2f} ({change:+.2f})"
        )
    iso = [r["tre_iso"] for r in rows]
    general = [r["tre_general"] for r in rows]
    print(f"ISO-{ISO_ITERATIONS} median {np.median(iso):.2f}, the general model's {np.median(general):.2f}")
    for threshold in THRESHOLDS:
        kept = [r["tre_iso"] if r["mind_gain"] > threshold else r["tre_general"] for r in rows]
        worse_iso, worse_start = np.subtract(kept, iso), np.subtract(kept, general)
        print(
            f"keep ISO where the MIND gain > {threshold:+.2f}: median {np.median(kept):.2f}; worse than ISO "
            f"by > 0.1 mm in {int(sum(worse_iso > 0.1))} (worst {worse_iso.max():+.2f}), than the general "
            f"model in {int(sum(worse_start > 0.1))} (worst {worse_start.max():+.2f})"
        )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="FOLDER[:MOVING_PHASE]")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    args = parser.parse_args()
    if args.summary:
        return summary(args.summary)
    if not args.out or not args.case:
        parser.error("give --case DIR[:K] (repeatable) and --out, or --summary")
    torch.set_num_threads(2)
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        for spec in args.case:
            handle.write(json.dumps(run_pair(engine, network, *case_spec(spec))) + "\n")
            handle.flush()


if __name__ == "__main__":
    main()
