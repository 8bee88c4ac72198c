"""Results at the fixed image's native resolution: images, quality maps, carried labels, the report, its
figure.

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
from rso.core.geometry import AIR_HU, ModelGrid, upsample_field
from rso.core.imageio import write_bytes_atomically, write_displacement_field, write_image
from rso.core.labels import LabelInput, check_labels_on, write_propagated
from rso.core.patches import add_patches
from rso.core.quality import box_summaries, change_map, folding_map, jacobian_map, jacobian_summary
from rso.errors import InputError

log = logging.getLogger(__name__)

CHANGED_MM = 0.1  # the last step "changed" a voxel when it moved it by more than this


def native_field(session, index: int | None = None) -> sitk.Image:
    """The session's field on the fixed image's own grid (LPS mm, fixed -> moving).

    The coarse field is interpolated from the model grid; fine patches (native RSO) are added at
    the native voxels themselves, so their detail is not lost to the model grid. ``index``: the
    field after that step (0: before any step); None: the current one.
    """
    state = session.state if index is None else session.state_at(index)
    return _on_fixed_grid(session, state.field, state.patches)


def last_step_change(session) -> sitk.Image:
    """What the last step changed: u_after - u_before on the fixed image's grid (LPS mm).

    Upsampling is linear, so the coarse fields' difference is upsampled once; the fine patches of
    the state after are added and those of the state before subtracted.
    """
    before, after = session.state_at(len(session.history) - 1), session.state
    return _on_fixed_grid(session, after.field - before.field, after.patches, before.patches)


def _on_fixed_grid(session, field_voxels: np.ndarray, patches=(), removed_patches=()) -> sitk.Image:
    """A (3, z, y, x) model-grid field upsampled to the fixed grid, plus ``patches``, minus
    ``removed_patches``."""
    coarse = upsample_field(session.grid.field_image(session.grid.voxels_to_mm(field_voxels)), session.fixed)
    if not patches and not removed_patches:
        return coarse
    grid = ModelGrid.of_image(session.fixed)
    total = add_patches(sitk.GetArrayViewFromImage(coarse), grid, patches)
    if removed_patches:
        total = -add_patches(-total, grid, removed_patches)
    field = sitk.GetImageFromArray(total.astype(np.float64), isVector=True)
    field.CopyInformation(coarse)
    return field


def warp_native(moving: sitk.Image, field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The moving image resampled on ``reference``'s grid through a displacement field."""
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.Resample(moving, reference, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def rewarp(session) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """What the clinician waits for after a step: the native-resolution field, warped and difference
    images."""
    field = native_field(session)
    warped = warp_native(session.moving, field, session.fixed)
    return field, warped, sitk.Subtract(warped, sitk.Cast(session.fixed, sitk.sitkFloat32))


def write_images(session, out_dir: Path) -> dict[str, Path]:
    """warped, displacement and difference, and the quality maps, at the fixed image's resolution."""
    return _write_images(session, out_dir)[0]


def _write_images(session, out_dir: Path) -> tuple[dict[str, Path], dict, sitk.Image, sitk.Image]:
    """The images of ``write_images``; also the quality summary, the field and its det J (for labels)."""
    field, warped, difference = rewarp(session)
    paths = {
        "warped": write_image(warped, out_dir / "warped.nii.gz"),
        "displacement": write_displacement_field(field, out_dir / "displacement.nii.gz"),
        "difference": write_image(difference, out_dir / "difference.nii.gz"),
    }
    quality_paths, quality, jacobian = write_quality_maps(session, field, out_dir)
    return {**paths, **quality_paths}, quality, field, jacobian


def write_quality_maps(session, field: sitk.Image, out_dir: Path) -> tuple[dict[str, Path], dict, sitk.Image]:
    """jacobian.nii.gz (det J), folding.nii.gz (det J <= 0), change.nii.gz (the last step's |change|, mm)
    and quality.json (det J statistics, folding, and a summary per RSO box)."""
    jacobian = jacobian_map(field)
    change = change_map(last_step_change(session)) if session.history else None
    quality = {
        "field": jacobian_summary(jacobian),
        "boxes": box_summaries(session.history, jacobian, change),
        "last_step": _last_step(session, change),
    }
    paths = {
        "jacobian": write_image(jacobian, out_dir / "jacobian.nii.gz"),
        "folding": write_image(folding_map(jacobian), out_dir / "folding.nii.gz"),
    }
    if change is not None:
        paths["change"] = write_image(change, out_dir / "change.nii.gz")
    else:  # no step (all undone): a change map left from before would describe a step that is gone
        (out_dir / "change.nii.gz").unlink(missing_ok=True)
    paths["quality"] = write_bytes_atomically(
        json.dumps(quality, indent=1).encode(), out_dir / "quality.json"
    )
    return paths, quality, jacobian


def _last_step(session, change: sitk.Image | None) -> dict | None:
    if change is None:
        return None
    values = sitk.GetArrayViewFromImage(change)
    return {
        "step": len(session.history),
        "kind": session.history[-1].kind,
        "change_mm_max": float(values.max()),
        "changed_ml": float((values > CHANGED_MM).sum()) * float(np.prod(change.GetSpacing())) / 1000.0,
        "changed_threshold_mm": CHANGED_MM,
    }


def check_output_folder(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file")
    return out_dir


def write_results(
    session, out_dir: str | Path, figure: bool = True, labels: LabelInput | None = None
) -> dict[str, Path]:
    """Write warped, displacement, difference, the quality maps, report.json and report.png into ``out_dir``.

    With ``labels`` (drawn on the moving image) also labels_warped.nii.gz, labels_colors.txt and
    labels_report.json: the labels carried onto the fixed image.
    """
    out_dir = check_output_folder(out_dir)
    paths, quality, field, jacobian = _write_images(session, out_dir)
    report = {**build_report(session), "quality": quality}
    if labels is not None:
        label_paths, report["labels"] = write_propagated(labels, field, session.fixed, out_dir, jacobian)
        paths.update(label_paths)
    paths["report"] = write_bytes_atomically(json.dumps(report, indent=1).encode(), out_dir / "report.json")
    if figure:
        from rso.core.report_figure import report_figure  # matplotlib only when a figure is wanted

        paths["figure"] = report_figure(session, out_dir / "report.png")
    return paths


def write_labels(session, labels: LabelInput, out_dir: str | Path) -> tuple[dict[str, Path], dict]:
    """The session's current field carries ``labels`` (drawn on the moving image) onto the fixed image."""
    check_labels_on(labels.image, session.moving)
    return write_propagated(labels, native_field(session), session.fixed, check_output_folder(out_dir))


def build_report(session) -> dict:
    steps = []
    for record in session.history:
        step = record.to_dict()
        step.pop("box", None)
        steps.append(step)
    return {
        "tool": "rso-registration",
        "version": __version__,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": str(session.device),
        },
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
