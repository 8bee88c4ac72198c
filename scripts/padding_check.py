"""Which images ``rso.core.body.padding_as_air`` would change (bench/sweep/padding/plan.md): every phase of
every cached simulated case must come back as it is (cone-beam streaks are not padding), and a console's
padded source scan must not.

    python scripts/padding_check.py ~/.cache/rso-registration/cases ~/.cache/rso-registration/data \
        THORAX_CROPS_FOLDER > bench/sweep/padding/check.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import SimpleITK as sitk

from rso.core.body import PADDING_BELOW_HU, padding_as_air


def main(folders: list[str]) -> int:
    paths = sorted(
        p
        for folder in folders
        for pattern in ("*ct_phase*.nii.gz", "*image.nrrd", "cxr.nii.gz", "chest_crop_*.nii.gz")
        for p in Path(folder).expanduser().rglob(pattern)
    )
    changed, share_below = [], []
    for path in paths:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        values = sitk.GetArrayViewFromImage(image)
        low = float(values.min())
        if low < PADDING_BELOW_HU:
            share_below.append((float((values <= low + 0.5).mean()), str(path)))
        if padding_as_air(image, path.name) is not image:
            changed.append(str(path))
    print(f"{len(paths)} images; changed by padding_as_air: {len(changed)}")
    print("\n".join(f"  {p}" for p in changed))
    if share_below:
        share, path = max(share_below)
        print(f"{len(share_below)} images reach below {PADDING_BELOW_HU:g} HU; the largest share of voxels")
        print(f"at an image's minimum: {100 * share:.3f} % ({path})")
        unchanged = [s for s, p in share_below if p not in changed]
        print(f"largest among the unchanged: {100 * max(unchanged, default=0.0):.3f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
