#!/usr/bin/env python
"""The README's contour picture: lungs and a 5-mm nodule drawn on the moving phase, carried onto the
fixed one.

On the demo case (rso.evaluation.demo.demo_case(): CBCT phase 0 = fixed, phase 5 = moving):

* the labels on the moving image are the simulator's own phase-5 labels
  (rso.simulation.case_labels): phase 0's lungs (split at the midline) and a 5-mm nodule, pulled
  through the exact inverse of the truth field truth_0_5, the same way the simulator made the
  phase-5 CT from phase 0. So they are what a clinician would have drawn on phase 5, and phase 0's
  labels are the truth to compare the carried ones with;
* the registration is the bundled model, then ISO (the command line's defaults, no box);
* the labels are carried with rso.core.labels (what ``register --labels`` does) and scored
  against the truth (Dice, HD95).

    python scripts/contour_figure.py --out docs/figures/contours.png --results out/contours
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

log = logging.getLogger("contour_figure")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures/contours.png", help="the figure (PNG)")
    parser.add_argument(
        "--results", default="out/contours", help="folder for the registration's results and labels"
    )
    parser.add_argument("--iso", type=int, default=100, help="ISO iterations")
    parser.add_argument("--moving-phase", type=int, default=5)
    parser.add_argument("--plot-only", action="store_true", help="draw from the results already in --results")
    return parser.parse_args(argv)


def register(case: Path, moving_phase: int, iso: int, results: Path) -> None:
    """general -> ISO on the case's CBCT pair, the moving phase's labels carried and scored, into
    ``results``."""
    from rso.core.workflow import RegisterJob, run_register_job
    from rso.settings import ISOSettings, PairInputs
    from rso.simulation.case_labels import case_labels

    inputs = PairInputs(
        fixed=str(case / "cbct_phase0.nii.gz"),
        moving=str(case / f"cbct_phase{moving_phase}.nii.gz"),
        truth=str(case / f"truth_0_{moving_phase}.nii.gz"),
        reference=str(case / "ct_phase0.nii.gz"),
        metrics_mask=str(case / "lung_mask.nii.gz"),
    )
    job = RegisterJob(
        inputs=inputs,
        out=str(results),
        iso=ISOSettings(iterations=iso),
        figure=False,
        labels=str(case_labels(case, moving_phase)),
        labels_colors=str(case / "labels_colors.txt"),
        labels_reference=str(case_labels(case, 0)),
    )
    run_register_job(job)


def read_results(case: Path, moving_phase: int, results: Path) -> tuple[dict, dict]:
    """The labels report and the arrays to draw (z, y, x): fixed CBCT, truth, unregistered and carried
    labels, det J."""
    from rso.core.labels import LabelInput

    read = lambda path: sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # noqa: E731
    fixed = sitk.ReadImage(str(case / "cbct_phase0.nii.gz"))
    drawn = LabelInput.read(case / f"labels_phase{moving_phase}.nii.gz").image
    unregistered = sitk.Resample(drawn, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    arrays = {
        "fixed": read(case / "cbct_phase0.nii.gz"),
        "truth": read(case / "labels_phase0.nii.gz"),
        "unregistered": sitk.GetArrayFromImage(unregistered),
        "carried": read(results / "labels_warped.nii.gz"),
        "jacobian": read(results / "jacobian.nii.gz"),
        "spacing": fixed.GetSpacing(),
    }
    return json.loads((results / "labels_report.json").read_text()), arrays


def figure(report: dict, arrays: dict, iso: int, moving_phase: int, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    nodule = np.argwhere(arrays["truth"] == 3)
    row = int(np.round(nodule[:, 1].mean()))  # the coronal plane through the nodule (array axis 1 = y)
    cut = lambda volume: volume[:, row, :]  # noqa: E731
    spacing = arrays["spacing"]
    style = dict(origin="lower", aspect=spacing[2] / spacing[0])
    rows = {r["value"]: r for r in report["labels"]}
    colors = {value: r["color"] for value, r in rows.items()}
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.0))
    panels = [
        ("unregistered", f"labels drawn on phase {moving_phase} (moving), laid on phase 0 unregistered"),
        ("carried", f"the same labels carried through general + ISO-{iso}"),
    ]
    for ax, (key, title) in zip(axes, panels):
        ax.imshow(cut(arrays["fixed"]), cmap="gray", vmin=-1000, vmax=400, **style)
        for value, color in colors.items():
            for labels, width, line_color in ((arrays["truth"], 1.0, "white"), (arrays[key], 1.8, color)):
                mask = cut(labels) == value
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors=[line_color], linewidths=width)
        scores = (
            "\n"
            + ", ".join(
                f"{rows[v]['name'].replace('_', ' ')}: Dice {rows[v]['dice']:.3f}, "
                f"HD95 {rows[v]['hd95_mm']:.1f} mm"
                for v in rows
                if v != 3
            )
            + f"\nnodule (5 mm): Dice {rows[3]['dice']:.2f}, HD95 {rows[3]['hd95_mm']:.1f} mm"
        )
        ax.set_title(
            f"CBCT phase 0 (fixed), coronal through the nodule:\n{title}{scores if key == 'carried' else ''}",
            fontsize=9,
        )
        ax.set_axis_off()
    shown = axes[2].imshow(cut(arrays["jacobian"]), cmap="RdBu_r", vmin=0.5, vmax=1.5, **style)
    axes[2].set_title(
        f"det J of the field (jacobian.nii.gz): red stretched, blue compressed;\n"
        f"min {arrays['jacobian'].min():.2f}, folding voxels {(arrays['jacobian'] <= 0).sum()}",
        fontsize=9,
    )
    axes[2].set_axis_off()
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    handles = [Line2D([], [], color=colors[v], lw=2, label=rows[v]["name"].replace("_", " ")) for v in rows]
    handles.append(Line2D([], [], color="white", lw=1, label="truth (phase 0's own labels)"))
    axes[0].legend(handles=handles, loc="lower left", fontsize=8, facecolor="0.2", labelcolor="white")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    from rso.evaluation.demo import demo_case

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    case, results = demo_case(), Path(args.results)
    if not args.plot_only:
        register(case, args.moving_phase, args.iso, results)
    report, arrays = read_results(case, args.moving_phase, results)
    for row in report["labels"]:
        log.info(
            "%-12s moving %8.1f ml -> fixed %8.1f ml (truth %8.1f ml): Dice %.3f, HD95 %.1f mm",
            row["name"],
            row["volume_ml_moving"],
            row["volume_ml_fixed"],
            row["volume_ml_reference"],
            row["dice"],
            row["hd95_mm"],
        )
    log.info("wrote %s", figure(report, arrays, args.iso, args.moving_phase, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
