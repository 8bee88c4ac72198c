"""The whole-image part of the default pipeline per benchmark case, for two general models (#20 item 7).

For each cone-beam case of the benchmark's seeds 17 and 18, with its projection geometry: the whole-lung
TRE (mm) of the general model and of ISO-100 after it (matched and guarded, as `register` runs it), once with
``--old`` (the model bundled before 2026-12-05) and once with the bundled one. One JSON line per case.

    git show 66602f5:RSORegistration/rso/resources/general_model.pt > old_model.pt
    python scripts/general_model_iso_replay.py --old old_model.pt \\
        --out bench/results-conebeam-4/iso_per_case.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_demo_model import BUNDLED, DEMO_GRID  # noqa: E402
from conebeam_study import case_inputs  # noqa: E402

from rso.core.model import build_model  # noqa: E402
from rso.core.paths import cases_dir  # noqa: E402
from rso.core.session import RegistrationSession  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

CASES = (  # (case folder, moving phase): the benchmark's `conebeam` plan
    ("bench-cxr-xvi-seed17-phase5", 5),
    ("bench-lung1-xvi-seed18-phase5", 5),
    ("bench-lung2-xvi-seed18-phase5", 5),
    ("bench-cxr-truebeam-seed18-phase3", 3),
    ("bench-lung1-truebeam-seed17-phase3", 3),
    ("bench-lung2-truebeam-seed17-phase3", 3),
)


def whole_lung(model: Path, folder: Path, moving: int) -> tuple[float, float]:
    """(general, ISO-100 after it) whole-lung TRE in mm, fp32."""
    net, _ = build_model(model)
    engine = EngineSettings(grid=DEMO_GRID, device="cpu", precision="fp32")
    session = RegistrationSession(case_inputs(folder, moving), net, engine=engine)
    general = session.general().metrics["tre_mm"]["mean"]
    return general, session.iso(100).metrics["tre_mm"]["mean"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", required=True, type=Path, help="the model bundled before (compact weights)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for name, moving in CASES:
            row = {"case": name}
            for label, model in (("old", args.old), ("bundled", BUNDLED)):
                general, iso = whole_lung(model, cases_dir() / name, moving)
                row |= {f"{label}_general_mm": round(general, 2), f"{label}_iso100_mm": round(iso, 2)}
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
