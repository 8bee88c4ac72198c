"""Artefact matching on a 1 mm pair: the reprojection at the image's spacing against a 2 mm copy.

A training anatomy's cone-beam case (``simulate --preset truebeam``), phases 0 and 5, resampled to 1 mm
isotropic; general model then ISO-100 on the matched pair, once per matching spacing, from the same
network. One JSON row per spacing: matching seconds, ISO seconds, whole-lung TRE after ISO-100 (mm).

    python scripts/matching_spacing_study.py CASE_FOLDER --out bench/sweep/matching-spacing/rows.json

The case of the recorded rows: ``rso-registration simulate --ct lung1 --preset truebeam --seed 11 --only 5``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import rso.core.projection.matching as matching
from rso.core.inputs import read_inputs
from rso.core.workflow import build_network, start_session
from rso.evaluation.bench.scale import resample_isotropic
from rso.settings import EngineSettings, ISOSettings, PairInputs

SPACING_MM = 1.0
FILES = {
    "fixed": ("cbct_phase0.nii.gz", "linear"),
    "moving": ("cbct_phase5.nii.gz", "linear"),
    "truth": ("truth_0_5.nii.gz", "linear"),
    "metrics_mask": ("lung_mask.nii.gz", "nearest"),
}


def one_millimetre(case: Path, folder: Path) -> PairInputs:
    """The case's phases 0 and 5, truth and lung mask at 1 mm in ``folder`` (made once)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (file, interpolation) in FILES.items():
        path = folder / file
        if not path.is_file():
            image = resample_isotropic(sitk.ReadImage(str(case / file)), SPACING_MM, interpolation)
            sitk.WriteImage(image, str(path))
        paths[name] = str(path)
    geometries = {
        f"{n}_geometry": str(case / f"cbct_phase{k}_geometry.xml") for n, k in (("fixed", 0), ("moving", 5))
    }
    return PairInputs(**paths, **geometries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/matching-spacing"), help="the 1 mm images")
    args = parser.parse_args()
    inputs = read_inputs(one_millimetre(args.case, args.work))
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    rows = []
    for spacing in (0.0, matching.MATCHING_SPACING_MM):  # 0: the image's own spacing
        matching.MATCHING_SPACING_MM = spacing
        session = start_session(engine, inputs, network=network)
        session.general()
        start = time.perf_counter()
        session.pair.compared_images(True)
        matched_s = time.perf_counter() - start
        record = session.iso(ISOSettings(iterations=100))
        rows.append(
            {
                "matching_spacing_mm": spacing or SPACING_MM,
                "matching_seconds": round(matched_s, 1),
                "iso_seconds": record.seconds,
                "tre_mm_after_general": session.history[0].metrics["tre_mm"]["mean"],
                "tre_mm_after_iso100": record.metrics["tre_mm"]["mean"],
                "rmse_hu_after_iso100": record.metrics["rmse_hu"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
