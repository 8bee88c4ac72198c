"""The general model against no motion: can the images tell, without the truth, where the general model's
field is no better than no motion at all (bench/sweep/identity-start/plan.md)?

For every pair of the training anatomies' validation set at seed 127 (the cases of
``truth_smoothness_study.py``, phase 0 fixed, phases 1-9 moving), a session with the bundled model and both
geometry files where the case has them: whole-lung TRE (mm) of no motion and of the general model, and the
share of the MIND dissimilarity under no motion that the general model's field removes (ISO's guard's
measure, ``rso.core.iso_guard.given_gain``, in the fit mask) on the images as given and, with geometry, on
the artefact-matched pair. One JSON line per pair; a summary of the plan's candidates at the end.

    python scripts/identity_start_study.py --out bench/sweep/identity-start/study.jsonl
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
from truth_smoothness_study import NEAR_STILL_MM, validation_folders  # noqa: E402

from rso.core.iso_guard import given_gain  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

CANDIDATES = (0.0, 0.05, 0.10)  # G: keep no motion where the field removes less than this (the plan)
WORST_MM = 0.25  # the plan: no pair more than this worse than the general model
NEAR_STILL_GAIN_MM = 0.1  # the plan: the near-still pairs' mean must fall by at least this
MOVING_PHASES = range(1, 10)


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    """One pair: TRE of no motion and of the general model, and the general field's gains over no motion."""
    session = start_session(engine, case_inputs(folder, moving), network=network)
    general = session.general()
    pair = session.pair
    field = torch.from_numpy(session.field_voxels).to(pair.fixed_t)[None]
    zero = torch.zeros_like(field)
    identity = session.metrics(np.zeros_like(session.field_voxels))
    row = {
        "case": folder.name,
        "phase": moving,
        "identity_tre_mm": round(identity["tre_mm"]["mean"], 4),
        "general_tre_mm": round(general.metrics["tre_mm"]["mean"], 4),
        "gain_given": round(
            given_gain(session.net.warp, pair.network_inputs(False), zero, field, pair.fit_t), 4
        ),
    }
    if pair.geometry is not None:
        matched = pair.network_inputs(True)
        row["gain_matched"] = round(given_gain(session.net.warp, matched, zero, field, pair.fit_t), 4)
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Each candidate G of the plan on ``rows``: mean and near-still mean TRE, the worst change, kept."""
    general = np.array([r["general_tre_mm"] for r in rows])
    still = np.array([r["identity_tre_mm"] < NEAR_STILL_MM for r in rows])
    result = []
    for threshold in CANDIDATES:
        to_identity = np.array([r["gain_given"] < threshold for r in rows])
        tre = np.where(to_identity, [r["identity_tre_mm"] for r in rows], general)
        worst = float(np.max(tre - general))
        near = float(general[still].mean() - tre[still].mean())
        result.append(
            {
                "threshold": threshold,
                "to_identity": int(to_identity.sum()),
                "to_identity_near_still": int((to_identity & still).sum()),
                "mean_tre_mm": round(float(tre.mean()), 4),
                "general_mean_tre_mm": round(float(general.mean()), 4),
                "near_still_tre_mm": round(float(tre[still].mean()), 4),
                "general_near_still_tre_mm": round(float(general[still].mean()), 4),
                "worst_change_mm": round(worst, 4),
                "qualifies": bool(
                    worst <= WORST_MM and tre.mean() <= general.mean() and near >= NEAR_STILL_GAIN_MM
                ),
            }
        )
    return result


def every_phase(folders_of):
    """``pairs_of`` for ``run_pair_study``: every moving phase 1-9 of every folder ``folders_of(thorax)``."""
    return lambda thorax: [(folder, moving) for folder in folders_of(thorax) for moving in MOVING_PHASES]


def run_pair_study(doc: str, pairs_of, score_pair, summary) -> int:
    """A study's command line: ``score_pair(engine, network, folder, moving)`` for every (folder, moving
    phase) ``pairs_of(thorax)`` gives, one JSON line each into ``--out`` (resumable: pairs already there are
    skipped), then ``summary(rows)`` into ``--out`` with the suffix ``.summary.json``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per pair (resumable)")
    parser.add_argument("--thorax", type=Path, default=None, help="the chest crops' folder, if not simulated")
    args = parser.parse_args()
    torch.set_num_threads(2)
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    lines = args.out.read_text().splitlines() if args.out.is_file() else []
    done = {(row["case"], row["phase"]) for row in map(json.loads, lines)}
    with args.out.open("a") as sink:
        for folder, moving in pairs_of(args.thorax):
            if (folder.name, moving) not in done:
                row = score_pair(engine, network, folder, moving)
                print(json.dumps(row), file=sink, flush=True)
                print(json.dumps(row), flush=True)
    result = summary([json.loads(line) for line in args.out.read_text().splitlines()])
    args.out.with_suffix(".summary.json").write_text(json.dumps(result, indent=1) + "\n")
    for row in result:
        print(json.dumps(row))
    return 0


def every_validation_folder(thorax: Path | None) -> list[Path]:
    return [folder for folders in validation_folders(thorax).values() for folder in folders]


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, every_phase(every_validation_folder), score_pair, summary))
