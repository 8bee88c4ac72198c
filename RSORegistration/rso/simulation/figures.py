"""The figure of a simulated case (rso.simulation.simulate): CT, CBCT, truth and streaks at two phases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def plot_case(case_dir: str | os.PathLike, png_path: str | os.PathLike, phase: int | None = None) -> Path:
    """A figure of one case: coronal CT, CBCT and truth at end exhale and phase K (default N/2, end
    inhale); axial CBCT slices and their streaks (CBCT - CT) at both phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case_dir, png_path = Path(case_dir), Path(png_path)
    info = json.loads((case_dir / "case.json").read_text())
    k = info["phases"] // 2 if phase is None else phase
    read = lambda name: sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / name)))  # noqa: E731
    ct0, ctk, cb0, cbk = (read(f"{kind}_phase{i}.nii.gz") for kind in ("ct", "cbct") for i in (0, k))
    truth = read(f"truth_0_{k}.nii.gz")  # via ITK: LPS mm
    lungs = read("lung_mask.nii.gz")
    spacing = info["grid"]["spacing"]
    y = int(np.median(np.nonzero(lungs)[1]))  # coronal plane through the lungs
    z = int(np.percentile(np.nonzero(lungs)[0], 30))  # axial plane in the lower lungs
    coronal = dict(cmap="gray", vmin=-1000, vmax=400, origin="lower", aspect=spacing[2] / spacing[0])
    axial = dict(cmap="gray", vmin=-1000, vmax=400, aspect=spacing[1] / spacing[0])
    diverging = dict(cmap="RdBu_r", vmin=-250, vmax=250)
    panels = [
        (ct0[:, y], "CT phase 0 (end exhale)", coronal),
        (ctk[:, y], f"CT phase {k}", coronal),
        (cb0[:, y], "CBCT phase 0", coronal),
        (cbk[:, y], f"CBCT phase {k}", coronal),
        (
            np.linalg.norm(truth[:, y], axis=-1),
            f"|truth 0->{k}| (mm)",
            dict(coronal, cmap="magma", vmin=0, vmax=None),
        ),
        (ctk[:, y] - ct0[:, y], f"CT phase {k} - phase 0 (HU)", dict(coronal, **diverging)),
        (cb0[z], "CBCT phase 0, axial", axial),
        (cbk[z], f"CBCT phase {k}, axial", axial),
        (cb0[z] - ct0[z], "CBCT - CT, phase 0: streaks, noise", dict(axial, **diverging)),
        (cbk[z] - ctk[z], f"CBCT - CT, phase {k}", dict(axial, **diverging)),
    ]
    fig, axes = plt.subplots(2, 5, figsize=(20, 8.5))
    for ax, (image, title, style) in zip(axes.ravel(), panels):
        shown = ax.imshow(image, **style)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        if style["cmap"] != "gray":
            fig.colorbar(shown, ax=ax, fraction=0.046)
    amp = info["amplitudes_mm"]
    fig.suptitle(
        f"Simulated case (seed {info['seed']}, {info['phases']} phases): SI {amp['si']:.1f} mm, "
        f"AP {amp['ap']:.1f} mm, LR {amp['lr']:.1f} mm",
        fontsize=12,
    )
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=75)
    plt.close(fig)
    return png_path
