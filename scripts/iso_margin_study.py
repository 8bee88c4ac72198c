"""ISO's margin with the four-patient general model, on training anatomies
(bench/sweep/iso-margin-four-patient/plan.md).

For every pair of the training anatomies' console scans at seed 127 (phase 0 fixed, phases 1-9 moving, both
geometry files), one session with the bundled model: whole-lung TRE (mm) after the general model and after
ISO-100 on the artefact-matched pair with its guard off (the field the guard would judge), and the share of
the images' MIND dissimilarity as given that ISO's field removes against the general model's (the guard's
measure, ``rso.core.iso_guard.given_gain``). One JSON line per pair (resumable); then each margin of the plan.

    python scripts/iso_margin_study.py --out bench/sweep/iso-margin-four-patient/study.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import every_phase, run_pair_study  # noqa: E402
from truth_smoothness_study import validation_folders  # noqa: E402

from rso.core.iso_guard import given_gain  # noqa: E402
from rso.core.workflow import start_session  # noqa: E402
from rso.settings import ISOSettings  # noqa: E402

MARGINS = (0.20, 0.15, 0.10, 0.05)  # the plan's candidates, today's first
HARM_MM = 0.5  # the plan: no pair more than this worse than the general model
ITERATIONS = 100


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    """The general model's and unguarded matched ISO-100's whole-lung TRE, and ISO's gain as given."""
    session = start_session(engine, case_inputs(folder, moving), network=network)
    if not session.geometry:
        raise SystemExit(f"{folder}: the study needs both phases' geometry files")
    general = session.general().metrics["tre_mm"]["mean"]
    start = torch.from_numpy(session.field_voxels)[None]
    iso = session.iso(ISOSettings(iterations=ITERATIONS, guard=False))
    proposed = torch.from_numpy(session.field_voxels)[None]
    pair = session.pair
    gain = given_gain(session.net.warp, pair.network_inputs(False), start, proposed, pair.fit_t)
    return {
        "case": folder.name,
        "phase": moving,
        "general_tre_mm": round(general, 4),
        "iso_tre_mm": round(iso.metrics["tre_mm"]["mean"], 4),
        "given_gain": round(gain, 4),
    }


def summary(rows: list[dict]) -> list[dict]:
    """Each margin on ``rows``: ISO kept where its gain exceeds it; mean TRE, the worst change, kept count."""
    general = np.array([r["general_tre_mm"] for r in rows])
    result = []
    for margin in MARGINS:
        kept = np.array([r["given_gain"] > margin for r in rows])
        tre = np.where(kept, [r["iso_tre_mm"] for r in rows], general)
        result.append(
            {
                "margin": margin,
                "kept": int(kept.sum()),
                "mean_tre_mm": round(float(tre.mean()), 4),
                "worst_change_mm": round(float(np.max(tre - general)), 4),
                "best_change_mm": round(float(np.min(tre - general)), 4),
            }
        )
    today = result[0]["mean_tre_mm"]
    for row in result:
        row["qualifies"] = row["worst_change_mm"] <= HARM_MM and row["mean_tre_mm"] <= today
    return result


def console_folders(thorax: Path | None) -> list[Path]:
    """The validation set's console scans (both geometry files): its XVI-like and TrueBeam-like ones."""
    folders = validation_folders(thorax)
    return folders["xvi-vendor"] + folders["truebeam-vendor"]


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, every_phase(console_folders), score_pair, summary))
