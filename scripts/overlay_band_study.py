"""What the difference overlay shows a clinician on 4D CBCT phases: misalignment, or noise and streaks.

For each case (a folder made by ``rso-registration simulate``), the pair is registered as a user would
(``rso-registration register``, the defaults: general model and ISO-100, artefact-matched where both
geometry files are there; no box): the overlay after ISO is where the clinician looks for a box to draw.
Its colour is then scored against the overlay the clean CT phases would give under the same field
(the simulator's anatomy without noise, scatter or streaks): a voxel *should* be coloured where that
ideal difference exceeds 100 HU, and *should not* where it is under 20 HU. Inside the body and the
field of view, per band: the share of voxels coloured, recall (coloured where it should be), the
false-colour rate (coloured where it should not be), and precision against the base rate.

    python scripts/overlay_band_study.py --case DIR[:K] ... --out bench/sweep/overlay-band/runs.json

(``K``: the moving phase; by default the last phase the case made.)

The bands: the default 32 HU, and the display's noise band (``RSORegistrationLib.display``: two robust
spreads of the difference where the fixed image is denser than -900 HU).
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

MODULE_DIR = Path(__file__).resolve().parents[1] / "RSORegistration"
sys.path.insert(0, str(MODULE_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_spec  # noqa: E402

SHOULD_HU, SHOULD_NOT_HU = 100.0, 20.0


def register(folder: Path, moving: int, out: Path) -> None:
    """The CLI's defaults on phase 0 against ``moving``, with both geometry files where they exist."""
    command = [
        sys.executable,
        "-m",
        "rso.cli",
        "register",
        "--fixed",
        str(folder / "cbct_phase0.nii.gz"),
        "--moving",
        str(folder / f"cbct_phase{moving}.nii.gz"),
        "--out",
        str(out),
    ]
    geometries = [folder / f"cbct_phase{p}_geometry.xml" for p in (0, moving)]
    if all(g.is_file() for g in geometries):
        command += ["--fixed-geometry", str(geometries[0]), "--moving-geometry", str(geometries[1])]
    subprocess.run(command, check=True, capture_output=True, text=True)


def score(folder: Path, moving: int, result: Path) -> dict:
    """Recall, false colour and precision of the overlay at each band (module docstring)."""
    from RSORegistrationLib.display import DEFAULT_NEUTRAL_HU, difference_band_hu

    fixed = sitk.ReadImage(str(folder / "cbct_phase0.nii.gz"), sitk.sitkFloat32)
    transform = sitk.ReadTransform(str(result / "transform.h5"))

    def on_fixed(image: sitk.Image, transform: sitk.Transform = sitk.Transform(), fill: float = -1000.0):
        return sitk.GetArrayFromImage(
            sitk.Resample(image, fixed, transform, sitk.sitkLinear, fill, sitk.sitkFloat32)
        )

    ct = [sitk.ReadImage(str(folder / f"ct_phase{p}.nii.gz"), sitk.sitkFloat32) for p in (0, moving)]
    ideal = on_fixed(ct[1], transform) - on_fixed(ct[0])
    difference = sitk.GetArrayFromImage(sitk.ReadImage(str(result / "difference.nii.gz"), sitk.sitkFloat32))
    masks = [
        on_fixed(sitk.ReadImage(str(folder / name)), fill=0.0) > 0.5
        for name in ("body_mask.nii.gz", "fov_mask.nii.gz")
    ]
    region = masks[0] & masks[1]
    should, should_not = np.abs(ideal) > SHOULD_HU, np.abs(ideal) < SHOULD_NOT_HU
    bands = {
        "default": DEFAULT_NEUTRAL_HU,
        "noise": difference_band_hu(difference, sitk.GetArrayFromImage(fixed)),
    }
    record = {"case": folder.name, "moving_phase": moving, "base_rate": float(should[region].mean())}
    for name, band in bands.items():
        coloured = np.abs(difference) > band
        record[name] = {
            "band_hu": float(band),
            "coloured": float(coloured[region].mean()),
            "recall": float(coloured[region & should].mean()),
            "false_colour": float(coloured[region & should_not].mean()),
            "precision": float((coloured & should)[region].sum() / max(1, coloured[region].sum())),
        }
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, metavar="DIR[:K]")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of all cases' records")
    args = parser.parse_args()
    records = []
    for case in args.case:
        folder, moving = case_spec(case)
        with tempfile.TemporaryDirectory(prefix="rso-overlay-") as scratch:
            register(folder, moving, Path(scratch) / "result")
            records.append(score(folder, moving, Path(scratch) / "result"))
        r = records[-1]
        print(
            f"{folder.name:40s} base {r['base_rate']:.3f}"
            + "".join(
                f" | {k} {r[k]['band_hu']:5.0f} HU: coloured {r[k]['coloured']:.3f}"
                f" recall {r[k]['recall']:.3f} false {r[k]['false_colour']:.3f}"
                f" precision {r[k]['precision']:.3f}"
                for k in ("default", "noise")
            ),
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
