"""Where a general model's field folds: every folded voxel of the pairs a study found folding, counted by
its model-grid slice from the nearer axial end (docs/decisions.md, "A smoothness term on step 3").

    python scripts/fold_location.py --model MODEL.pt --study bench/sweep/truth-smoothness/study.json \\
        --rows validation.baseline --out bench/sweep/truth-smoothness/folds-validation.json

``--rows`` is the dotted path, inside the study JSON, of a mapping of sets whose ``rows`` carry ``case``,
``phase`` and ``general_folding_fraction`` (as ``build_demo_model.held_out_tre`` writes them).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_demo_model import DEMO_GRID  # noqa: E402

from rso.core.inputs import read_inputs  # noqa: E402
from rso.core.metrics import jacobian_determinant  # noqa: E402
from rso.core.model import build_model  # noqa: E402
from rso.core.paths import cases_dir  # noqa: E402
from rso.core.session import RegistrationSession  # noqa: E402
from rso.settings import EngineSettings, PairInputs  # noqa: E402


def folded_slices(model: Path, case: Path, phase: int) -> tuple[np.ndarray, float]:
    """Folded voxels per model-grid z slice (index 0 inferior) of the general model's field 0 -> phase,
    and the grid's z step in mm (positive: z runs inferior -> superior)."""
    inputs = read_inputs(
        PairInputs(fixed=str(case / "cbct_phase0.nii.gz"), moving=str(case / f"cbct_phase{phase}.nii.gz"))
    )
    net, _ = build_model(model)
    session = RegistrationSession(inputs, net, engine=EngineSettings(grid=DEMO_GRID, device="cpu"))
    session.general()
    folded = jacobian_determinant(session.field_mm, session.grid.index_to_lps) <= 0
    return folded.sum(axis=(1, 2)), float(session.grid.index_to_lps[2, 2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--rows", required=True, help="dotted path to the sets in the study JSON")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    sets = json.loads(args.study.read_text())
    for key in args.rows.split("."):
        sets = sets[key]
    rows = [r for s in sets.values() for r in s["rows"] if r["general_folding_fraction"] > 0]
    from_end, ends, pairs = collections.Counter(), collections.Counter(), []
    for row in rows:
        per_slice, z_step = folded_slices(args.model, cases_dir() / row["case"], row["phase"])
        last = len(per_slice) - 1
        for z in np.nonzero(per_slice)[0]:
            from_end[int(min(z, last - z))] += int(per_slice[z])
            ends["inferior" if (z < last / 2) == (z_step > 0) else "superior"] += int(per_slice[z])
        pairs.append(
            {**row, "folded_by_slice": {int(z): int(per_slice[z]) for z in np.nonzero(per_slice)[0]}}
        )
    result = {
        "model": str(args.model),
        "pairs": len(pairs),
        "folded_voxels_by_slices_from_end": dict(sorted(from_end.items())),
        "folded_voxels_by_end": dict(ends),
        "rows": pairs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(pairs)} pairs fold; folded voxels by model-grid slices from the nearer axial end:")
    print(result["folded_voxels_by_slices_from_end"], result["folded_voxels_by_end"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
