"""What a box of cone-beam 4D CBCT shows of its motion: the native similarity at the true field (#20).

The cone-beam counterpart of ``scripts/streak_study.py`` (same measure, same settings): for each
cone-beam case of the training anatomies (``--case DIR[:K]``, folders made by ``rso-registration simulate
--preset xvi|truebeam``), the general model's field, and two misaligned and two control boxes (40 mm),
the native similarity (MIND-SSC, 2 mm pre-smoothing) is evaluated in the box at the true correction and
at none: ``gain_at_truth`` = 1 - cost(truth) / cost(0), negative where the images agree better at the
wrong alignment. Image pairs compared:

* ``cbct``: the case's two phases, as RSO sees them without geometry;
* ``matched``: both seen through both phases' geometries (``rso.core.projection.matching``), as RSO sees them;
* ``ideal``: each CT phase projected and reconstructed noiselessly through its own phase's geometry (no
  noise, scatter or motion inside the bin: the streaks of the two geometries only);
* ``ideal_one_geometry``: both CT phases through the fixed phase's geometry (the same streak directions on
  both sides: what a perfect matching could give);
* ``ct``: the clean CT phases (what the motion model itself shows).

Per case, the streaks themselves: the fixed CT phase through each phase's geometry, RMS difference in the
lungs (HU, on the image and after 2 and 4 mm Gaussian smoothing), before and after matching.

    python scripts/conebeam_streak_study.py --case DIR ... --out bench/sweep/conebeam-streaks/study.json

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402
from streak_study import SETTINGS, box_row, summarise  # noqa: E402

from rso.core.projection.matching import match_artefacts, reproject  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402

SMOOTHING_MM = (0.0, 2.0, 4.0)


def read(folder: Path, name: str) -> sitk.Image:
    return sitk.ReadImage(str(folder / name), sitk.sitkFloat32)


def pairs_of(session, folder: Path, phase: int) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    ct_fixed, ct_moving = read(folder, "ct_phase0.nii.gz"), read(folder, f"ct_phase{phase}.nii.gz")
    fixed_geometry, moving_geometry = session.pair.geometry
    placement = session.pair.placement
    fixed_ideal = reproject(ct_fixed, fixed_geometry, placement)
    return {
        "cbct": (session.fixed, session.moving),
        "matched": session.pair.compared_images(True),
        "ideal": (fixed_ideal, reproject(ct_moving, moving_geometry, placement)),
        "ideal_one_geometry": (fixed_ideal, reproject(ct_moving, fixed_geometry, placement)),
        "ct": (ct_fixed, ct_moving),
    }


def streak_level(session, folder: Path) -> dict:
    """The fixed CT phase through each phase's geometry: RMS difference in the lungs (HU) at each smoothing,
    as reconstructed and after matching."""
    ct = read(folder, "ct_phase0.nii.gz")
    lungs = sitk.GetArrayFromImage(read(folder, "lung_mask.nii.gz")) > 0.5
    geometries, placement = session.pair.geometry, session.pair.placement
    own = tuple(reproject(ct, g, placement) for g in geometries)
    pairs = {"reconstructed": own, "matched": match_artefacts(*own, geometries, placement)}
    level = {}
    for name, (a, b) in pairs.items():
        for sigma in SMOOTHING_MM:
            smooth = (
                (lambda i: i) if sigma == 0 else (lambda i, s=sigma: sitk.SmoothingRecursiveGaussian(i, s))
            )
            difference = sitk.GetArrayFromImage(smooth(a) - smooth(b))[lungs]
            level[f"{name}_{sigma:g}mm"] = round(float(np.sqrt(np.mean(difference**2))), 1)
    return level


def study(cases: list[str], out: Path) -> dict:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    rows, levels = [], {}
    for spec in cases:
        folder, phase = case_spec(spec)
        case = json.loads((folder / "case.json").read_text())
        preset = case["scanner"]
        session = start_session(engine, case_inputs(folder, phase), network=network)
        session.general()
        pairs = pairs_of(session, folder, phase)
        levels[folder.name] = {"preset": preset, **streak_level(session, folder)}
        print(folder.name, levels[folder.name], flush=True)
        for kind in ("misaligned", "control"):
            for index, box in enumerate(pick_boxes(session, kind, 2, 40.0, seed=case["seed"])):
                for name, pair in pairs.items():
                    row = {"case": [folder.name, case["seed"], preset, phase], "kind": kind, "box": index}
                    rows.append({**row, "pair": name, **box_row(session, pair, box)})
                print(f"{folder.name} {kind} {index} done", flush=True)
    report = {"settings": SETTINGS.to_dict(), "streaks_hu": levels, "rows": rows, "summary": summarise(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    return report


def run_case_study(description: str, default_out: str, study) -> None:
    """The command line of a study over cone-beam cases: ``--case DIR[:K]`` (repeatable), ``--out``."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, metavar="DIR[:K]", help="a cone-beam case")
    parser.add_argument("--out", type=Path, default=Path(default_out))
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    study(args.case, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


def main() -> None:
    run_case_study(__doc__, "bench/sweep/conebeam-streaks/study.json", study)


if __name__ == "__main__":
    main()
