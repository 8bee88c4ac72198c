"""Artefact matching when the scanner reconstructs differently from the matching (#20; a study).

Artefact matching reprojects each phase through the other phase's geometry and reconstructs it with the
product's FDK recipe (RTK's Joseph projector, the bare ramp filter, detector pixels of the image's voxel
size times the magnification). The cone-beam simulator makes its phases with the very same recipe, so
the benchmark never sees a scan whose reconstruction differs from the matching's. A real scanner's does:
vendors smooth the ramp filter and sample the panel finer than the image. Here the training anatomies'
cone-beam cases are simulated again with the simulator's recipe changed and matching left as it is:

* ``same``: as the simulator makes them (the benchmark's cases);
* ``smooth-filter``: the phases reconstructed with a Hann-windowed ramp (cut-off 0.5 of Nyquist), as a
  vendor's standard kernel smooths them;
* ``fine-panel``: the projections sampled on detector pixels half the size (a finer panel than the
  image), then reconstructed onto the same grid.

For each case and variant, the default pipeline (general model, ISO-100 with its guard, native RSO with
its guard) on two misaligned and two control boxes picked on the general model's field: the box TRE
(truth) before and after the step, whether the step was kept, and the native similarity's gain at the
true correction on the images as given and on the matched pair (``scripts/streak_study.py``'s measure).
One JSON line per (case, variant, box); ``--summary`` prints the table.

    python scripts/simulator_mismatch_study.py --case ANATOMY:PRESET:SEED:K ... [--more-cts DIR] --out FILE
    python scripts/simulator_mismatch_study.py --summary FILE

Training anatomies only (cxr, lung1, chest crops); lung2 is held out.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402
from streak_study import box_row  # noqa: E402

import rso.simulation.clinical as clinical  # noqa: E402
from rso.core.projection import Detector  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings  # noqa: E402
from rso.simulation.fetch import fetch_data  # noqa: E402
from rso.simulation.simulate import SimulationParams, simulate_case  # noqa: E402

VENDOR_HANN_CUT = 0.5
log = logging.getLogger("simulator_mismatch_study")


class FinePanel(Detector):
    """The simulator's panel with pixels half the size the matching uses (the same extent)."""

    @classmethod
    def covering(cls, volume_rtk, geometry, panel_mm) -> Detector:
        coarse = Detector.covering(volume_rtk, geometry, panel_mm)
        return Detector.centred(tuple(2 * n for n in coarse.size_px), tuple(s / 2 for s in coarse.spacing_mm))


def variant_recipe(variant: str):
    """Patch the simulator's reconstruction and panel for ``variant``; returns the undo."""
    saved = (clinical.reconstruct, clinical.Detector)
    if variant == "smooth-filter":
        clinical.reconstruct = functools.partial(saved[0], hann_cut=VENDOR_HANN_CUT)
    elif variant == "fine-panel":
        clinical.Detector = FinePanel
    elif variant != "same":
        raise SystemExit(f"unknown variant {variant!r}")

    def undo():
        clinical.reconstruct, clinical.Detector = saved

    return undo


def make_case(
    anatomy: str, preset: str, seed: int, phase: int, variant: str, cases: Path, more: Path | None
) -> Path:
    """The case folder of ``variant`` (simulated once). ``more``: a folder of further source CTs, each
    ``ANATOMY.nii.gz`` (the chest crops), beside fetch-data's."""
    folder = cases / f"mismatch-{variant}-{anatomy}-{preset}-seed{seed}-phase{phase}"
    if (folder / "case.json").is_file():
        return folder
    sources = {**fetch_data(), **({p.name.split(".")[0]: p for p in more.glob("*.nii.gz")} if more else {})}
    undo = variant_recipe(variant)
    try:
        simulate_case(sources[anatomy], folder, 10, seed, SimulationParams.preset(preset), only=[phase])
    finally:
        undo()
    return folder


def score_case(engine, network, folder: Path, phase: int, seed: int) -> list[dict]:
    session = start_session(engine, case_inputs(folder, phase), network=network)
    session.general()
    boxes = [(k, b) for k in ("misaligned", "control") for b in pick_boxes(session, k, 2, 40.0, seed=seed)]
    session.iso()
    rows = []
    for kind, box in boxes:
        before = session.metrics(box=box)["tre_mm_box"]["mean"]
        gains = {
            name: box_row(session, pair, box)["gain_at_truth"]
            for name, pair in (
                ("given", (session.fixed, session.moving)),
                ("matched", session.pair.compared_images(True)),
            )
        }
        record = session.rso(box)
        after = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
        rows.append(
            {
                "kind": kind,
                "tre_before": before,
                "tre_after": after,
                "kept": record.accepted,
                "declined": record.declined,
                "gain_at_truth": gains,
            }
        )
        if record.accepted:
            session.undo()
    return rows


def study(specs: list[str], out: Path, variants: list[str], cases: Path, more: Path | None) -> None:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for spec in specs:
            anatomy, preset, seed, phase = spec.split(":")
            for variant in variants:
                started = time.perf_counter()
                folder = make_case(anatomy, preset, int(seed), int(phase), variant, cases, more)
                for index, row in enumerate(score_case(engine, network, folder, int(phase), int(seed))):
                    row = {"case": f"{anatomy}-{preset}-seed{seed}", "variant": variant, "box": index, **row}
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    log.info("%s", row)
                log.info("%s %s done in %.0f s", spec, variant, time.perf_counter() - started)


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for preset in sorted({r["case"].split("-")[1] for r in rows}):
        print(f"\n{preset}-like cases")
        for variant, kind in itertools.product(variants, ("misaligned", "control")):
            mine = [
                r for r in rows if (r["variant"], r["kind"]) == (variant, kind) and f"-{preset}-" in r["case"]
            ]
            if mine:
                print(f"  {variant:14s} {kind:10s} {_summary_line(mine)}")


def _summary_line(rows: list[dict]) -> str:
    """Kept steps, median box TRE before and after, the worst change, boxes improved and gains at truth."""
    change = np.array([r["tre_after"] - r["tre_before"] for r in rows])
    median = {key: np.median([r[key] for r in rows]) for key in ("tre_before", "tre_after")}
    gain = {pair: np.median([r["gain_at_truth"][pair] for r in rows]) for pair in ("given", "matched")}
    return (
        f"n={len(rows):2d} kept {sum(r['kept'] for r in rows):2d}  TRE {median['tre_before']:5.2f} -> "
        f"{median['tre_after']:5.2f} (worst {change.max():+.2f}, improved > 0.5 mm: "
        f"{int((change < -0.5).sum())})  gain at truth: given {gain['given']:+.2f}, "
        f"matched {gain['matched']:+.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], metavar="ANATOMY:PRESET:SEED:K")
    parser.add_argument("--variant", action="append", choices=("same", "smooth-filter", "fine-panel"))
    parser.add_argument("--cases", type=Path, default=Path("/tmp/mismatch-cases"))
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/simulator-mismatch/runs.jsonl"))
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--simulate-only", action="store_true", help="make the cases and stop")
    parser.add_argument("--more-cts", type=Path, help="a folder of further source CTs, each ANATOMY.nii.gz")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(2)
    variants = args.variant or ["same", "smooth-filter", "fine-panel"]
    if args.summary:
        summary(args.summary)
    elif args.simulate_only:
        for spec, variant in ((s, v) for s in args.case for v in variants):
            anatomy, preset, seed, phase = spec.split(":")
            make_case(anatomy, preset, int(seed), int(phase), variant, args.cases, args.more_cts)
    else:
        study(args.case, args.out, variants, args.cases, args.more_cts)


if __name__ == "__main__":
    main()
