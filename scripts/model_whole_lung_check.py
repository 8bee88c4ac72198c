"""Two general models on the same cone-beam cases: whole-lung TRE after the general model and after ISO-100
(guarded, the default), with both phases' geometry files and without (bench/sweep/general-model-anatomy/).

The benchmark scores one model per run and picks its boxes on that model's field; this scores the whole lung
of both models on the same pairs, so that a model change is compared where the boxes cannot differ.

    C=~/.cache/rso-registration/cases
    python scripts/model_whole_lung_check.py --model before=BEFORE.pt --model after=AFTER.pt \\
        --case $C/bench-lung2-xvi-vendor-seed79-phase5:5 ... \\
        --out bench/sweep/general-model-anatomy/fresh.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_guard_study import NO_GEOMETRY  # noqa: E402
from conebeam_study import case_inputs, case_spec  # noqa: E402

from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.settings import EngineSettings, ISOSettings  # noqa: E402


def score(model: Path, folder: Path, moving: int) -> dict:
    """Whole-lung TRE (mm) after the general model and after guarded ISO-100, with and without geometry."""
    engine = EngineSettings(device="cpu", precision="fp32", model=str(model))
    network = build_network(engine)
    inputs = case_inputs(folder, moving)
    row = {}
    for path, given in (("geometry", inputs), ("none", {**inputs, **NO_GEOMETRY})):
        session = start_session(engine, given, network=network)
        general = session.general().metrics
        iso = session.iso(ISOSettings(iterations=100))
        row["general"] = round(general["tre_mm"]["mean"], 3)
        row[f"iso_{path}"] = round(iso.metrics["tre_mm"]["mean"], 3)
        row[f"iso_{path}_kept"] = iso.params.get("kept", "iso")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CKPT (repeatable)")
    parser.add_argument("--case", action="append", required=True, help="DIR[:K]")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = dict(spec.split("=", 1) for spec in args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as sink:
        for spec in args.case:
            folder, moving = case_spec(str(Path(spec).expanduser()))
            for name, model in models.items():
                row = {"case": folder.name, "model": name, **score(Path(model), folder, moving)}
                print(json.dumps(row), file=sink, flush=True)
                print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
