"""Results at the fixed image's native resolution, the report, and its figure.

The displacement field written here maps fixed points to moving points in LPS millimetres (an
ITK displacement field), so ITK and Slicer apply it as the transform that aligns the moving
image with the fixed one. ``warped.nii.gz`` is exactly the moving image resampled through it.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import __version__
from .errors import InputError
from .geometry import AIR_HU, upsample_field
from .imageio import write_bytes_atomically, write_displacement_field, write_image

log = logging.getLogger(__name__)



def native_field(session) -> sitk.Image:
    """The session's field on the fixed image's own grid (LPS mm, fixed -> moving)."""
    return upsample_field(session.grid.field_image(session.field_mm), session.fixed)


def warp_native(moving: sitk.Image, field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The moving image resampled on ``reference``'s grid through a displacement field."""
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.Resample(moving, reference, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def check_output_folder(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file")
    return out_dir


def write_results(session, out_dir: str | Path, figure: bool = True) -> dict[str, Path]:
    """Write warped, displacement, difference, report.json and report.png into ``out_dir``."""
    out_dir = check_output_folder(out_dir)
    field = native_field(session)
    warped = warp_native(session.moving, field, session.fixed)
    difference = sitk.Subtract(warped, sitk.Cast(session.fixed, sitk.sitkFloat32))
    paths = {
        "warped": write_image(warped, out_dir / "warped.nii.gz"),
        "displacement": write_displacement_field(field, out_dir / "displacement.nii.gz"),
        "difference": write_image(difference, out_dir / "difference.nii.gz"),
    }
    report = build_report(session)
    paths["report"] = write_bytes_atomically(json.dumps(report, indent=1).encode(), out_dir / "report.json")
    if figure:
        from .figures import report_figure  # matplotlib only when a figure is wanted

        paths["figure"] = report_figure(session, out_dir / "report.png")
    return paths


def build_report(session) -> dict:
    steps = []
    for record in session.history:
        step = record.to_dict()
        step.pop("box", None)
        steps.append(step)
    return {
        "tool": "rso-registration",
        "version": __version__,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "device": str(session.device)},
        "model": {"source": session.model_source, "config": session.net.config.to_dict()},
        "grid": session.grid.to_dict(),
        "seed": session.seed,
        "precision": session.precision,
        "conventions": {
            "displacement": "ITK displacement field, LPS mm, maps fixed points to moving points",
            "metrics_grid": "metrics are computed on the model grid",
            "box_ras": "[R1, A1, S1, R2, A2, S2] mm",
        },
        "steps": steps,
        "final": session.metrics() if session.history else None,
    }


def summary_row(record) -> dict:
    """A flat row for tables: the numbers a reader compares between steps."""
    metrics = record.metrics
    tre, tre_box = metrics.get("tre_mm") or {}, metrics.get("tre_mm_box") or {}
    return {
        "step": record.kind,
        "iterations": record.params.get("iterations", 0),
        "seconds": record.seconds,
        "rmse_hu": metrics["rmse_hu"],
        "rmse_hu_box": metrics.get("rmse_hu_box"),
        "tre_mm": tre.get("mean"),
        "tre_mm_box": tre_box.get("mean"),
        "folding_fraction": metrics["folding_fraction"],
        "outside_change_mm": metrics.get("outside_change_mm"),
    }


def format_table(rows: list[dict]) -> str:
    """A plain-text table that reads well in a terminal and in a README code block."""
    if not rows:
        return "(no steps)"
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 and value != 0 else f"{value:.2f}"
    return str(value)


def box_centre_index(session) -> np.ndarray:
    """Model-grid voxel at which figures cut: the last box's centre, or the grid centre."""
    boxes = [r.box for r in session.history if r.box is not None]
    if boxes:
        return np.array([(a + b) // 2 for a, b in zip(boxes[-1].voxels.lo, boxes[-1].voxels.hi)])
    return np.array(session.grid.shape) // 2
