"""The network's view of an image stored in another orientation (bench/sweep/orientation/plan.md).

For each case (``--case DIR:K``, made by ``rso-registration simulate``), its clean CT phases 0 and K are
written again in each orientation (``--orientation``: ``LPS`` as simulated, ``RAS``, ``PSL`` (a sagittal
stack) through ``sitk.DICOMOrient``: the same physical image in another voxel order; ``oblique``: resampled
onto the same grid tilted 10 degrees about L), then ``rso-registration register`` runs the general model
and ISO-100 in fp32 with the case's truth and lung mask. One JSON line per (case, orientation): the
whole-lung TRE (mm) after each step.

    C=~/.cache/rso-registration/cases
    python scripts/orientation_study.py --case $C/bench-lung1-xvi-seed101-phase5:5 \
        --case $C/bench-cxr-xvi-seed61-phase5:5 --out bench/sweep/orientation/after.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ORIENTATIONS = ("LPS", "RAS", "PSL", "oblique")
TILT_DEGREES = 10.0


def reoriented(image: sitk.Image, orientation: str) -> sitk.Image:
    """``image`` (an LPS-stored volume) stored in ``orientation``; 'oblique': resampled onto its own grid
    tilted about L (linear interpolation, air outside)."""
    if orientation != "oblique":
        return sitk.DICOMOrient(image, orientation)
    tilt = sitk.VersorTransform((1.0, 0.0, 0.0), np.deg2rad(TILT_DEGREES)).GetMatrix()
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    centre = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    direction = np.array(tilt).reshape(3, 3)
    origin = np.array(centre) - direction @ ((size - 1) / 2 * spacing)
    reference = sitk.Image(image.GetSize(), image.GetPixelID())
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(tilt)
    reference.SetOrigin(origin.tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)


def run(folder: Path, moving: int, orientation: str, work: Path) -> dict:
    names = {"fixed": "ct_phase0.nii.gz", "moving": f"ct_phase{moving}.nii.gz"}
    paths = {}
    for role, name in names.items():
        paths[role] = work / f"{role}_{orientation}.nii.gz"
        sitk.WriteImage(reoriented(sitk.ReadImage(str(folder / name)), orientation), str(paths[role]))
    out = work / f"out_{orientation}"
    command = [
        *("rso-registration", "register", "--iso", "100", "--precision", "fp32", "--quiet", "--no-figure"),
        *("--fixed", str(paths["fixed"]), "--moving", str(paths["moving"]), "--out", str(out)),
        *("--truth", str(folder / f"truth_0_{moving}.nii.gz")),
        *("--metrics-mask", str(folder / "lung_mask.nii.gz")),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    steps = json.loads((out / "report.json").read_text())["steps"]
    tre = {s["kind"]: round(s["metrics"]["tre_mm"]["mean"], 3) for s in steps}
    iso = next(s for s in steps if s["kind"] == "iso")
    return {
        "case": folder.name,
        "orientation": orientation,
        "direction": [round(v, 4) for v in sitk.ReadImage(str(paths["fixed"])).GetDirection()],
        "tre_general": tre["general"],
        "tre_iso": tre["iso"],
        "iso_declined": iso.get("declined"),
        "iso_params": iso.get("params"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, help="DIR:K")
    parser.add_argument("--orientation", action="append", choices=ORIENTATIONS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as sink:
        for spec in args.case:
            folder, moving = spec.rsplit(":", 1)
            for orientation in args.orientation or ORIENTATIONS:
                row = run(Path(folder).expanduser(), int(moving), orientation, Path(tmp))
                print(json.dumps(row), file=sink, flush=True)
                print(row, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
