"""The network's view of an image as a scanner or a converter stores it (bench/sweep/orientation/plan.md,
plan-fov.md).

For each case (``--case DIR:K``, made by ``rso-registration simulate``), its clean CT phases 0 and K are
written again in each storage (``--storage``): ``LPS`` as simulated, ``RAS``, ``PSL`` (a sagittal stack)
through ``sitk.DICOMOrient``: the same physical image in another voxel order; ``oblique``: resampled onto the
same grid tilted 10 degrees about L; ``fov500``: placed on a scanner's 500 mm field of view in the axial
plane (air around the body, as a CT console writes it; the simulator crops to the body); ``fov500-padded``:
the same with -2048 outside the reconstruction circle, as many CT scanners pad; ``circle-padded`` (plan in
bench/sweep/padding/): the image's own grid with -3024 outside the tightest reconstruction circle about its
centre (5 mm beyond the fixed phase's body), as a console pads a body that fills its field of view. Then
``rso-registration register`` runs the general model and ISO-100 in fp32 with the case's truth and lung
mask. One JSON line per (case, storage): the whole-lung TRE (mm) after each step. With ``--mr-like``
(orientations only) each CT phase is first made an MR-like image (``mr_like``) and registered with
``--allow-non-ct``. ``offset100`` and ``gain110`` (plan in bench/sweep/calibration/): a scanner's HU
calibration off by +100 HU or by a 10 % gain about air, meant with ``--phases cbct`` (the case's CBCT phases,
registered as given, without their geometry).

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

from rso.core.body import BODY_HU, OPENING_MM

STORAGES = (
    "LPS",
    "RAS",
    "PSL",
    "oblique",
    "fov500",
    "fov500-padded",
    "circle-padded",
    "offset100",
    "gain110",
)
CALIBRATIONS = {"offset100": (1.0, 100.0), "gain110": (1.1, 0.0)}  # HU' = -1000 + gain (HU + 1000) + offset
TILT_DEGREES = 10.0
# The MR-like map: lungs and bone dark, fat brightest, soft tissue between (not monotone in HU), 0-255.
MR_HU = (-1100.0, -900.0, -500.0, -150.0, -80.0, 0.0, 60.0, 200.0, 400.0, 1500.0, 3000.0)
MR_VALUES = (2.0, 8.0, 30.0, 190.0, 210.0, 120.0, 110.0, 90.0, 50.0, 20.0, 20.0)
FIELD_OF_VIEW_MM = 500.0
PADDING_HU = -2048.0
TIGHT_PADDING_HU = -3024.0  # the other common padding value
TIGHT_CLEARANCE_MM = 5.0  # a tight circle's reach beyond the body


def mr_like(image: sitk.Image, seed: int) -> sitk.Image:
    """A CT phase (HU, stored LPS) as an MR-like image: MR_HU -> MR_VALUES, a smooth bias field over the
    image (up to +-25 %) and Gaussian noise (sigma 4, ``seed``), clipped to 0-255."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in array.shape], indexing="ij")
    bias = 1 + 0.25 * x + 0.15 * y - 0.2 * z * z
    values = np.interp(array, MR_HU, MR_VALUES) * bias + np.random.default_rng(seed).normal(0, 4, array.shape)
    result = sitk.GetImageFromArray(np.clip(values, 0, 255).astype(np.float32))
    result.CopyInformation(image)
    return result


def stored(image: sitk.Image, storage: str, body: sitk.Image | None = None) -> sitk.Image:
    """``image`` (an LPS-stored volume cropped to the body) as ``storage`` stores it (the module's
    docstring); ``body``: the CT whose body sets the circle (``circle-padded`` only: the fixed phase's, so
    both phases share the console's one field of view)."""
    if storage == "circle-padded":
        return _padded_beside_body(image, body)
    if storage in CALIBRATIONS:
        gain, offset = CALIBRATIONS[storage]
        return sitk.Cast(image, sitk.sitkFloat32) * gain + (offset - 1000.0 + 1000.0 * gain)
    if storage in ("fov500", "fov500-padded"):
        return _on_field_of_view(image, padded=storage == "fov500-padded")
    if storage != "oblique":
        return sitk.DICOMOrient(image, storage)
    tilt = sitk.VersorTransform((1.0, 0.0, 0.0), np.deg2rad(TILT_DEGREES)).GetMatrix()
    return _resampled_around_centre(image, image.GetSize(), tilt)


def _resampled_around_centre(image: sitk.Image, size, direction) -> sitk.Image:
    """``image`` on ``size`` voxels at its spacing along ``direction``, about its centre (air outside)."""
    size, spacing = np.array(size), np.array(image.GetSpacing())
    middle = (np.array(image.GetSize()) - 1) / 2
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(middle.tolist()))
    matrix = np.array(direction).reshape(3, 3)
    reference = sitk.Image([int(n) for n in size], image.GetPixelID())
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(direction)
    reference.SetOrigin((centre - matrix @ ((size - 1) / 2 * spacing)).tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)


def _on_field_of_view(image: sitk.Image, padded: bool) -> sitk.Image:
    """The axial plane widened to FIELD_OF_VIEW_MM about the image's centre; with ``padded``, PADDING_HU
    outside the inscribed circle (the reconstruction circle)."""
    spacing = np.array(image.GetSpacing())
    across = np.ceil(FIELD_OF_VIEW_MM / spacing[:2]).astype(int)
    widened = _resampled_around_centre(image, [*across, image.GetSize()[2]], image.GetDirection())
    if not padded:
        return widened
    array = sitk.GetArrayFromImage(widened)
    y, x = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(array.shape[1:], spacing[1::-1])], indexing="ij"
    )
    array[:, np.hypot(x, y) > FIELD_OF_VIEW_MM / 2] = PADDING_HU
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(widened)
    return result


def _padded_beside_body(image: sitk.Image, body_of: sitk.Image) -> sitk.Image:
    """``image`` with TIGHT_PADDING_HU outside the axial circle about its centre that reaches
    TIGHT_CLEARANCE_MM beyond the farthest voxel of the body in ``body_of`` (a CT on the same grid; the body
    as ``rso.core.body`` finds it: above BODY_HU, opened, the largest object)."""
    tissue = sitk.BinaryThreshold(body_of, BODY_HU, 1e4, 1, 0)
    radius_voxels = [int(np.ceil(OPENING_MM / s)) for s in body_of.GetSpacing()]
    labels = sitk.RelabelComponent(
        sitk.ConnectedComponent(sitk.BinaryMorphologicalOpening(tissue, radius_voxels))
    )
    inside = (sitk.GetArrayFromImage(labels) == 1).any(axis=0)
    array = sitk.GetArrayFromImage(image)
    spacing = np.array(image.GetSpacing())
    y, x = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(array.shape[1:], spacing[1::-1])], indexing="ij"
    )
    radius = np.hypot(x, y)
    array[:, radius > radius[inside].max() + TIGHT_CLEARANCE_MM] = TIGHT_PADDING_HU
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def run(folder: Path, moving: int, storage: str, work: Path, mr: bool = False, kind: str = "ct") -> dict:
    names = {"fixed": (0, f"{kind}_phase0.nii.gz"), "moving": (moving, f"{kind}_phase{moving}.nii.gz")}
    paths = {}
    for role, (phase, name) in names.items():
        paths[role] = work / f"{role}_{storage}.nii.gz"
        image = sitk.ReadImage(str(folder / name))
        body = sitk.ReadImage(str(folder / "ct_phase0.nii.gz")) if storage == "circle-padded" else None
        sitk.WriteImage(stored(mr_like(image, phase) if mr else image, storage, body), str(paths[role]))
    out = work / f"out_{storage}"
    command = [
        *("rso-registration", "register", "--iso", "100", "--precision", "fp32", "--quiet", "--no-figure"),
        *("--fixed", str(paths["fixed"]), "--moving", str(paths["moving"]), "--out", str(out)),
        *("--truth", str(folder / f"truth_0_{moving}.nii.gz")),
        *("--metrics-mask", str(folder / "lung_mask.nii.gz")),
        *(("--allow-non-ct",) if mr else ()),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    steps = json.loads((out / "report.json").read_text())["steps"]
    tre = {s["kind"]: round(s["metrics"]["tre_mm"]["mean"], 3) for s in steps}
    iso = next(s for s in steps if s["kind"] == "iso")
    return {
        "case": folder.name,
        "orientation": storage,
        "mr_like": mr,
        "phases": kind,
        "direction": [round(v, 4) for v in sitk.ReadImage(str(paths["fixed"])).GetDirection()],
        "tre_general": tre["general"],
        "tre_iso": tre["iso"],
        "iso_declined": iso.get("declined"),
        "iso_params": iso.get("params"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, help="DIR:K")
    parser.add_argument("--storage", action="append", choices=STORAGES, help="default: the first four")
    parser.add_argument("--mr-like", action="store_true", help="MR-like images (LPS, RAS, PSL only)")
    parser.add_argument(
        "--phases", choices=("ct", "cbct"), default="ct", help="the clean CT or the CBCT phases"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mr_like and set(args.storage or STORAGES[:4]) - {"LPS", "RAS", "PSL"}:
        parser.error(
            "--mr-like takes only --storage LPS, RAS or PSL (the others pad or resample with CT's air)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as sink:
        for spec in args.case:
            folder, moving = spec.rsplit(":", 1)
            for storage in args.storage or STORAGES[:4]:
                row = run(
                    Path(folder).expanduser(), int(moving), storage, Path(tmp), args.mr_like, args.phases
                )
                print(json.dumps(row), file=sink, flush=True)
                print(row, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
