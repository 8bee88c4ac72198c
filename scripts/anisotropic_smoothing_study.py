"""Would smoothing across the streaks more than along the rotation axis let a TV phase's box show its motion?

A circular scan's undersampling streaks lie in planes across the rotation axis (the superior-inferior
axis of an axial image, docs/method.md's placement): within an axial plane they cross the anatomy, while an
edge seen along the axis is drawn by every view. For each case of the training anatomies (``--case
DIR[:K]``, TV cases registered without geometry as the product does), ISO-100 from the general model, then
misaligned and control boxes (40 mm, picked on ISO-100's field); in each box native RSO's similarity
(MIND-SSC, ``streak_study.SETTINGS``) is evaluated with each pre-smoothing of ``SMOOTHINGS`` (sigma in mm,
across the axis / along it): ``gain_at_truth`` = 1 - cost(truth) / cost(0), and the box TRE after native
RSO's translation search. The current default is ``2/2``.

    python scripts/anisotropic_smoothing_study.py --case DIR ... --out bench/sweep/tv-smoothing/study.json

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
from monai.networks.layers import GaussianFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402
from streak_study import SETTINGS  # noqa: E402

from rso.core.geometry import upsample_field  # noqa: E402
from rso.core.losses import MIND_RADIUS  # noqa: E402
from rso.core.mind import mind_ssc  # noqa: E402
from rso.core.native import Refinement, build_problem, correction_tensor  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings, ISOSettings  # noqa: E402

SMOOTHINGS = {"2/2": (2.0, 2.0), "4/4": (4.0, 4.0), "4/1": (4.0, 1.0), "6/2": (6.0, 2.0), "3/0.5": (3.0, 0.5)}
BOXES = (("misaligned", 3), ("control", 2))


class SmoothedRefinement(Refinement):
    """Native RSO's refinement with a pre-smoothing of (across, along) the axis in mm: the window's
    (Z, Y, X) axes are (S-I, A-P, L-R) for an axial image."""

    def __init__(self, problem, settings, sigma_mm: tuple[float, float]):
        self.sigma_mm = sigma_mm
        super().__init__(problem, settings)

    def _features(self, hu: torch.Tensor) -> list[torch.Tensor]:
        across, along = self.sigma_mm
        sigma = [along / self.spacing, across / self.spacing, across / self.spacing]
        hu = GaussianFilter(3, sigma).to(hu.device)(hu)
        return [mind_ssc(pair, radius=MIND_RADIUS) for pair in hu.split(1, dim=1)]


def box_rows(session, box) -> dict:
    state = session.state
    current = (session.grid.voxels_to_mm(state.field), state.patches)
    images = session.pair.compared_images(False)  # TV phases: the images as given
    problem = build_problem(images, box, 15.0, session.grid, current, torch.device("cpu"))
    reference = problem.window.reference_image()
    truth = sitk.GetArrayFromImage(upsample_field(session.truth, reference)).astype(np.float32)
    correction = truth - problem.current_mm
    inside = problem.box.slices
    rows = {"box_tre_before_mm": float(np.linalg.norm(correction[inside], axis=-1).mean())}
    for name, sigma in SMOOTHINGS.items():
        refinement = SmoothedRefinement(problem, SETTINGS, sigma)
        with torch.no_grad():
            zero = float(refinement.similarity(torch.zeros_like(correction_tensor(correction))))
            at_truth = float(refinement.similarity(correction_tensor(correction)))
        shift = refinement.search_translation()
        rows[name] = {
            "gain_at_truth": 1.0 - at_truth / zero,
            "box_tre_after_search_mm": float(np.linalg.norm(correction[inside] - shift, axis=-1).mean()),
        }
    return rows


def study(cases: list[str], out: Path) -> dict:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    rows = []
    for spec in cases:
        folder, phase = case_spec(spec)
        preset = json.loads((folder / "case.json").read_text())["scanner"]
        session = start_session(engine, case_inputs(folder, phase), network=network)
        session.general()
        session.iso(ISOSettings(iterations=100))
        for kind, count in BOXES:
            for index, box in enumerate(pick_boxes(session, kind, count, 40.0)):
                row = {"case": folder.name, "preset": preset, "kind": kind, "box": index}
                rows.append({**row, **box_rows(session, box)})
                print(json.dumps(rows[-1]), flush=True)
    report = {"smoothings_mm": SMOOTHINGS, "rows": rows, "summary": summarise(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    return report


def summarise(rows: list[dict]) -> dict:
    """Per (scanner, kind, smoothing): median gain at truth, boxes where it is negative, median box TRE
    after the search."""
    summary = {}
    for preset in sorted({r["preset"] for r in rows}):
        for kind, _ in BOXES:
            chosen = [r for r in rows if r["preset"] == preset and r["kind"] == kind]
            for name in SMOOTHINGS:
                gains = [r[name]["gain_at_truth"] for r in chosen]
                searched = [r[name]["box_tre_after_search_mm"] for r in chosen]
                summary[f"{preset} {kind} {name}"] = {
                    "n": len(chosen),
                    "gain_median": round(float(np.median(gains)), 3),
                    "gain_negative": int(sum(g < 0 for g in gains)),
                    "tre_before_median": round(float(np.median([r["box_tre_before_mm"] for r in chosen])), 2),
                    "tre_after_search_median": round(float(np.median(searched)), 2),
                }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, metavar="DIR[:K]")
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/tv-smoothing/study.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # beside a benchmark run; the numbers do not depend on it
    started = time.perf_counter()
    report = study(args.case, args.out)
    for key, value in report["summary"].items():
        print(f"{key:32s} {value}")
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
