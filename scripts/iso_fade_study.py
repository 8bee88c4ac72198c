"""ISO's end fade on cone-beam phases, on training anatomies (bench/sweep/iso-fade-conebeam/plan.md).

For each (pair, path) on which a lowered ISO rule would have used ISO (the 13 matched pairs of the ISO
margin study above 0.05, the 5 pairs without geometry the axis share keeps), one session: the general
model, ISO-100 with its guard off and no fade, then ISO's change from the general model's field faded by
the engine's carried fade for each F of the plan. Per F: whole-lung TRE (mm) and, over every box position
the benchmark may place, the worst change of the box's mean TRE against the general model's field.

    python scripts/iso_fade_study.py --out bench/sweep/iso-fade-conebeam/study.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from identity_start_study import run_pair_study  # noqa: E402
from iso_margin_study import console_folders  # noqa: E402
from iso_returns_study import (  # noqa: E402
    BOX_MM,
    HARM_MM,
    LOW_MARGIN,
    MARGIN_STUDY,
    margin_study_rows,
)

from rso.core import runners  # noqa: E402
from rso.core.workflow import start_session  # noqa: E402
from rso.evaluation.box_kinds import box_tre_map  # noqa: E402
from rso.options import DEFAULT_ISO_END_FADE_MM  # noqa: E402
from rso.settings import ISOSettings  # noqa: E402

FALLBACK_STUDY = MARGIN_STUDY.parents[1] / "iso-fallback/study.jsonl"
FADES_MM = (0.0, 20.0, 40.0, 60.0, 80.0)  # the plan's, today's among them
TODAY_MM = DEFAULT_ISO_END_FADE_MM


def combinations(thorax: Path | None) -> list[tuple[Path, int]]:
    """(folder, moving) per combination, the path in the moving phase's sign: negative means no geometry
    (the rows keep the sign, so that the study resumes per combination)."""
    fallback = [json.loads(line) for line in FALLBACK_STUDY.read_text().splitlines()]
    matched = {(r["case"], r["phase"]) for r in margin_study_rows() if r["given_gain"] > LOW_MARGIN}
    given = {(r["case"], r["phase"]) for r in fallback if r["given_kept"] and not r["matched_kept"]}
    folders = {folder.name: folder for folder in console_folders(thorax)}
    return [(folders[c], p) for c, p in sorted(matched)] + [(folders[c], -p) for c, p in sorted(given)]


def as_field(session, field_voxels: np.ndarray) -> SimpleNamespace:
    """What ``box_tre_map`` reads of a session, with ``field_voxels`` (3, z, y, x) as its field."""
    names = ("grid", "fixed_hu", "evaluation_mask", "moving", "truth_mm")
    view = {name: getattr(session, name) for name in names}
    return SimpleNamespace(**view, field_mm=session.grid.voxels_to_mm(field_voxels))


def score_pair(engine, network, folder: Path, moving: int) -> dict:
    """ISO-100 unfaded on one (pair, path), then each fade of the plan: whole-lung and worst-box change."""
    inputs = case_inputs(folder, abs(moving))
    if moving < 0:
        inputs = {**inputs, "fixed_geometry": None, "moving_geometry": None}
    session = start_session(engine, inputs, network=network)
    session.general()
    general = session.field_voxels.copy()
    general_map, allowed = box_tre_map(as_field(session, general), BOX_MM)
    session.iso(ISOSettings(iterations=100, guard=False, end_fade_mm=0.0))
    unfaded = torch.from_numpy(session.field_voxels)[None]
    context, start = runners.StepContext(session.pair, session.net, None), session.state_at(1)
    row = {"case": folder.name, "phase": moving, "matched": moving > 0, "fades": []}
    for fade in FADES_MM:
        # the engine's own fade (a private helper: the study must fade exactly as ISO does)
        field = runners._faded_at_the_ends(context, start, unfaded, fade)[0].numpy()
        change = box_tre_map(as_field(session, field), BOX_MM)[0] - general_map
        row["fades"].append(
            {
                "fade_mm": fade,
                "tre_mm": round(session.metrics(field)["tre_mm"]["mean"], 4),
                "worst_box_change_mm": round(float(change[allowed].max()), 4),
                "positions_worse": int((change[allowed] > HARM_MM).sum()),
                "positions": int(allowed.sum()),
            }
        )
    row["general_tre_mm"] = round(session.metrics(general)["tre_mm"]["mean"], 4)
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Per fade over ``rows``: mean whole-lung TRE, the largest and mean worst-box change; the candidate."""
    result = []
    for i, fade in enumerate(FADES_MM):
        entries = [row["fades"][i] for row in rows]
        worst = [e["worst_box_change_mm"] for e in entries]
        result.append(
            {
                "fade_mm": fade,
                "mean_tre_mm": round(float(np.mean([e["tre_mm"] for e in entries])), 4),
                "worst_box_change_mm": round(max(worst), 4),
                "mean_worst_box_change_mm": round(float(np.mean(worst)), 4),
                "positions_worse": sum(e["positions_worse"] for e in entries),
            }
        )
    general = round(float(np.mean([row["general_tre_mm"] for row in rows])), 4)
    today = next(r for r in result if r["fade_mm"] == TODAY_MM)
    for row in result:
        row["general_mean_tre_mm"] = general
        row["qualifies"] = bool(
            row["fade_mm"] > TODAY_MM
            and row["mean_tre_mm"] <= today["mean_tre_mm"]
            and row["worst_box_change_mm"] <= HARM_MM
        )
    return result


if __name__ == "__main__":
    sys.exit(run_pair_study(__doc__, combinations, score_pair, summary))
