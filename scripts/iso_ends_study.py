"""ISO where the scan ends inside the lungs (bench/sweep/iso-ends/plan.md).

For each case (``--case DIR:K``, made by ``rso-registration simulate``) its clean CT phases 0 -> K are
registered twice, the general model alone and with ISO-100 unguarded, each writing its displacement at the
fixed image's resolution. Each lung voxel's error (mm) is then reported by its distance from the nearer
axial end of the fixed image, and, offline, for ISO's correction faded towards the ends:
field = general + w (ISO - general), w = clip((d - E0) / (E1 - E0), 0, 1); with ``--engine-fade MM``, also
ISO with the engine's own fade (``--iso-end-fade MM``); and offline by where the general model carries each
voxel (``carried_end_distance_mm``, the plan's second addendum). One JSON line per case.

    C=~/.cache/rso-registration/cases
    python scripts/iso_ends_study.py --case $C/bench-lung1-xvi-seed101-phase5:5 \
        --out bench/sweep/iso-ends/study.jsonl
    python scripts/iso_ends_study.py --summary bench/sweep/iso-ends/study.jsonl
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

BANDS_MM = (0.0, 10.0, 20.0, 30.0, 50.0, np.inf)
FADES_MM = ((0.0, 20.0), (0.0, 40.0), (10.0, 40.0), (20.0, 60.0))
CARRIED_FADES_MM = (20.0, 30.0, 40.0)  # the second addendum: by where the general model carries a voxel


def register(folder: Path, moving: int, iso: int, out: Path, fade_mm: float = 0.0) -> np.ndarray:
    """The displacement (z, y, x, 3) LPS mm of one run on the case's clean CT phases."""
    command = [
        *("rso-registration", "register", "--iso", str(iso), "--no-iso-guard", "--precision", "fp32"),
        *("--iso-end-fade", str(fade_mm)),
        *("--quiet", "--no-figure", "--outputs", "displacement", "--out", str(out)),
        *("--fixed", str(folder / "ct_phase0.nii.gz"), "--moving", str(folder / f"ct_phase{moving}.nii.gz")),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement.nii.gz")))


def end_distance_mm(image: sitk.Image) -> np.ndarray:
    """Each voxel's distance (mm) from the nearer axial end of ``image`` (an axial LPS volume), (z, y, x)."""
    size, spacing = image.GetSize(), image.GetSpacing()
    k = np.arange(size[2]) * spacing[2]
    distance = np.minimum(k, k[-1] - k) + spacing[2] / 2  # from the slices' outer faces
    return np.broadcast_to(distance[:, None, None], (size[2], size[1], size[0]))


def carried_end_distance_mm(image: sitk.Image, field: np.ndarray) -> np.ndarray:
    """(z, y, x) mm: how far inside the image's axial extent (negative: beyond it) ``field`` ((z, y, x, 3)
    LPS mm, on ``image``'s grid, an axial LPS volume; the moving phase shares the grid) carries each voxel."""
    spacing = image.GetSpacing()[2]
    k = np.arange(image.GetSize()[2]) * spacing
    z = k[:, None, None] + field[..., 2]
    return np.minimum(z - k[0], k[-1] - z) + spacing / 2


def study(folder: Path, moving: int, work: Path, engine_fades=()) -> dict:
    fixed = sitk.ReadImage(str(folder / "ct_phase0.nii.gz"))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"truth_0_{moving}.nii.gz")))
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lung_mask.nii.gz"))) > 0
    general = register(folder, moving, 0, work / "general")
    iso = register(folder, moving, 100, work / "iso")
    distance = end_distance_mm(fixed)[lung]
    fields = {"general": general, "iso": iso}
    for e0, e1 in FADES_MM:
        weight = np.clip((end_distance_mm(fixed) - e0) / (e1 - e0), 0.0, 1.0)[..., None]
        fields[f"fade{e0:g}-{e1:g}"] = general + weight * (iso - general)
    carried = carried_end_distance_mm(fixed, general)
    for fade in CARRIED_FADES_MM:
        weight = np.clip(carried / fade, 0.0, 1.0)[..., None]
        fields[f"carried{fade:g}"] = general + weight * (iso - general)
    for fade in engine_fades:
        fields[f"iso-end-fade{fade:g}"] = register(folder, moving, 100, work / f"fade{fade:g}", fade)
    row = {"case": folder.name, "moving": moving, "lung_voxels": int(lung.sum())}
    for name, field in fields.items():
        error = np.linalg.norm(field - truth, axis=-1)[lung]
        row[name] = {"tre": round(float(error.mean()), 4), "bands": _bands(error, distance)}
    row["truth_bands"] = _bands(np.linalg.norm(truth, axis=-1)[lung], distance)
    return row


def _bands(values: np.ndarray, distance: np.ndarray) -> dict:
    """Mean of ``values`` and voxel count per end-distance band."""
    result = {}
    for low, high in zip(BANDS_MM[:-1], BANDS_MM[1:]):
        inside = (distance >= low) & (distance < high)
        name = f"{low:g}-{high:g}"
        result[name] = [round(float(values[inside].mean()), 3) if inside.any() else None, int(inside.sum())]
    return result


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    names = [n for n in rows[0] if isinstance(rows[0][n], dict) and "tre" in rows[0][n]]
    print(f"{'case':44s}" + "".join(f"{n:>13s}" for n in names))
    for row in rows:
        print(f"{row['case'][:44]:44s}" + "".join(f"{row[n]['tre']:13.3f}" for n in names))
    means = {n: np.mean([r[n]["tre"] for r in rows]) for n in names}
    worst = {n: max(r[n]["tre"] - r["iso"]["tre"] for r in rows) for n in names}
    print(f"{'mean':44s}" + "".join(f"{means[n]:13.3f}" for n in names))
    print(f"{'worst change against ISO':44s}" + "".join(f"{worst[n]:+13.3f}" for n in names))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="DIR:K")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    parser.add_argument(
        "--engine-fade", type=float, action="append", default=[], help="also ISO with --iso-end-fade MM"
    )
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.summary)
        return 0
    if not (args.case and args.out):
        parser.error("give --case and --out, or --summary")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as sink:
        for spec in args.case:
            folder, moving = spec.rsplit(":", 1)
            row = study(Path(folder).expanduser(), int(moving), Path(tmp), args.engine_fade)
            print(json.dumps(row), file=sink, flush=True)
            print(
                row["case"],
                {n: v["tre"] for n, v in row.items() if isinstance(v, dict) and "tre" in v},
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
