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

from rso import __version__
from rso.errors import InputError
from rso.core.geometry import AIR_HU, ModelGrid, upsample_field
from rso.core.patches import add_patches
from rso.core.imageio import write_bytes_atomically, write_displacement_field, write_image

log = logging.getLogger(__name__)


def native_field(session) -> sitk.Image:
    """The session's field on the fixed image's own grid (LPS mm, fixed -> moving).

    The coarse field is interpolated from the model grid; fine patches (native RSO) are added at
    the native voxels themselves, so their detail is not lost to the model grid.
    """
    state = session.state
    coarse = upsample_field(session.grid.field_image(session.grid.voxels_to_mm(state.field)), session.fixed)
    if not state.patches:
        return coarse
    total = add_patches(sitk.GetArrayViewFromImage(coarse), ModelGrid.of_image(session.fixed), state.patches)
    field = sitk.GetImageFromArray(total.astype(np.float64), isVector=True)
    field.CopyInformation(coarse)
    return field


def warp_native(moving: sitk.Image, field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The moving image resampled on ``reference``'s grid through a displacement field."""
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.Resample(moving, reference, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def rewarp(session) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """What the clinician waits for after a step: the native-resolution field, warped and difference images."""
    field = native_field(session)
    warped = warp_native(session.moving, field, session.fixed)
    return field, warped, sitk.Subtract(warped, sitk.Cast(session.fixed, sitk.sitkFloat32))


def write_images(session, out_dir: Path) -> dict[str, Path]:
    """warped.nii.gz, displacement.nii.gz and difference.nii.gz at the fixed image's resolution."""
    field, warped, difference = rewarp(session)
    return {
        "warped": write_image(warped, out_dir / "warped.nii.gz"),
        "displacement": write_displacement_field(field, out_dir / "displacement.nii.gz"),
        "difference": write_image(difference, out_dir / "difference.nii.gz"),
    }


def check_output_folder(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file")
    return out_dir


def write_results(session, out_dir: str | Path, figure: bool = True) -> dict[str, Path]:
    """Write warped, displacement, difference, report.json and report.png into ``out_dir``."""
    out_dir = check_output_folder(out_dir)
    paths = write_images(session, out_dir)
    report = build_report(session)
    paths["report"] = write_bytes_atomically(json.dumps(report, indent=1).encode(), out_dir / "report.json")
    if figure:
        from rso.core.report_figure import report_figure  # matplotlib only when a figure is wanted

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
