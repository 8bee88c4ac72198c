"""Results at the fixed image's native resolution: images, quality maps, carried labels, the report, its
figure.

The displacement field written here maps fixed points to moving points in LPS millimetres (an
ITK displacement field), so ITK and Slicer apply it as the transform that aligns the moving
image with the fixed one. ``warped.nii.gz`` is exactly the moving image resampled through it. With an
initial transform T0 (rso.core.initial) both include it: the field is x -> T0(x + u(x)) - x and the
moving image resampled is the one given, before T0. transform.h5 is the same transform for ITK tools.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso import __version__
from rso.core.composite import CoarseField, session_transform
from rso.core.geometry import AIR_HU, ModelGrid, upsample_field
from rso.core.imageio import write_bytes_atomically, write_displacement_field, write_image
from rso.core.initial import (
    composed_field,
    describe,
    inverse_field,
    round_trip_residual,
    write_transform,
)
from rso.core.labels import LabelInput, check_labels_on, write_propagated
from rso.core.landmarks import landmark_tre, write_markups_json
from rso.core.patches import add_patches
from rso.core.quality import box_summaries, change_map, folding_map, jacobian_map, jacobian_summary
from rso.errors import InputError

log = logging.getLogger(__name__)

CHANGED_MM = 0.1  # the last step "changed" a voxel when it moved it by more than this
INVERSE_FILE = "inverse_displacement.nii.gz"
# The files images are written to, by the names the returned paths give them (the worker's viewer files in
# <session>/current/ too).
FILES = {
    "warped": "warped.nii.gz",
    "difference": "difference.nii.gz",
    "displacement": "displacement.nii.gz",
    "jacobian": "jacobian.nii.gz",
    "folding": "folding.nii.gz",
    "change": "change.nii.gz",
    "quality": "quality.json",
}
# What a run may write besides report.json and transform.h5, and the files each is (options.DEFAULT_OUTPUTS).
OUTPUTS = {
    "warped": ("warped",),
    "difference": ("difference",),
    "displacement": ("displacement",),
    "quality_maps": ("jacobian", "folding", "change"),
}
ALL_OUTPUTS = tuple(OUTPUTS)
HU_RANGE = (-32768, 32767)  # CT images are written as whole HU (int16): a quarter of float64's bytes


def check_outputs(outputs) -> tuple[str, ...]:
    """The outputs asked for, each known; InputError names an unknown one."""
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(unknown)}; outputs: {', '.join(OUTPUTS)} (or all)")
    return tuple(outputs)


def native_field(session, index: int | None = None, initial: bool = True) -> sitk.Image:
    """The session's field on the fixed image's own grid (LPS mm, fixed -> moving).

    The coarse field is interpolated from the model grid; fine patches (native RSO) are added at
    the native voxels themselves, so their detail is not lost to the model grid. ``index``: the
    field after that step (0: before any step); None: the current one. With an initial transform
    T0 the field is composed with it, x -> T0(x + u(x)), unless ``initial`` is False (u alone).
    """
    state = session.state if index is None else session.state_at(index)
    field = _on_fixed_grid(session, state.field, state.patches)
    return composed_field(field, session.pair.initial_transform) if initial else field


def last_step_change(session) -> sitk.Image:
    """What the last step changed: u_after - u_before on the fixed image's grid (LPS mm).

    Upsampling is linear, so the coarse fields' difference is upsampled once; the fine patches of
    the state after are added and those of the state before subtracted.
    """
    before, after = session.state_at(len(session.history) - 1), session.state
    kept = len(before.patches)
    same_patches = (
        all(a is b for a, b in zip(after.patches[:kept], before.patches)) and len(after.patches) >= kept
    )
    if same_patches and np.array_equal(after.field, before.field):
        return _patches_on_fixed_grid(session, after.patches[kept:])  # a native step: no resampling
    return _on_fixed_grid(session, after.field - before.field, after.patches, before.patches)


def _patches_on_fixed_grid(session, patches) -> sitk.Image:
    """Only ``patches`` on the fixed grid (zero elsewhere), LPS mm: each is added on its own slices."""
    grid = ModelGrid.of_image(session.fixed)
    field = sitk.GetImageFromArray(add_patches(np.zeros((*grid.shape, 3), np.float32), grid, patches), True)
    field.CopyInformation(session.fixed)
    return field


def _on_fixed_grid(session, field_voxels: np.ndarray, patches=(), removed_patches=()) -> sitk.Image:
    """A (3, z, y, x) model-grid field upsampled to the fixed grid, plus ``patches``, minus
    ``removed_patches``."""
    model_field = session.grid.field_image(session.grid.voxels_to_mm(field_voxels))
    coarse = upsample_field(model_field, session.fixed, sitk.sitkVectorFloat32)  # 12 bytes a voxel, not 24
    if not patches and not removed_patches:
        return coarse
    grid = ModelGrid.of_image(session.fixed)
    total = add_patches(sitk.GetArrayViewFromImage(coarse), grid, patches)
    if removed_patches:
        total = -add_patches(-total, grid, removed_patches)
    field = sitk.GetImageFromArray(total, isVector=True)
    field.CopyInformation(coarse)
    return field


def session_transform_of(session, index: int | None = None) -> sitk.Transform:
    """The field after step ``index`` (None: the current one) with T0, as one ITK transform in the form it
    has (rso.core.composite): the model-grid field and the native windows, never a dense field."""
    state = session.state if index is None else session.state_at(index)
    coarse = CoarseField(session.grid, session.grid.voxels_to_mm(state.field))
    return session_transform(coarse, state.patches, session.pair.initial_transform)


def warp_native(moving: sitk.Image, field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The moving image resampled on ``reference``'s grid through a displacement field on that grid, as
    float32 (ITK's WarpImageFilter: the field as it is, float32 or float64, with no float64 copy)."""
    return sitk.Warp(
        sitk.Cast(moving, sitk.sitkFloat32),
        field,
        sitk.sitkLinear,
        reference.GetSize(),
        reference.GetOrigin(),
        reference.GetSpacing(),
        reference.GetDirection(),
        AIR_HU,
    )


def rewarp(session) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """What the clinician waits for after a step: the native-resolution field, warped and difference
    images."""
    field = native_field(session)
    warped = warp_native(session.pair.original_moving, field, session.fixed)
    return field, warped, sitk.Subtract(warped, sitk.Cast(session.fixed, sitk.sitkFloat32))


def write_images(session, out_dir: Path, outputs=ALL_OUTPUTS) -> dict[str, Path]:
    """warped, displacement and difference, and the quality maps, at the fixed image's resolution."""
    return _write_images(session, out_dir, outputs)[0]


def _write_images(session, out_dir: Path, outputs) -> tuple[dict[str, Path], dict, sitk.Image, sitk.Image]:
    """The images of ``write_images`` that ``outputs`` names (a file of an output not asked for, left by
    an earlier run, is removed); also the quality summary, the field and its det J (for labels)."""
    outputs = check_outputs(outputs)
    for name in set(OUTPUTS) - set(outputs):
        for file in OUTPUTS[name]:
            (out_dir / FILES[file]).unlink(missing_ok=True)
    field, paths = native_field(session), {}
    if "warped" in outputs or "difference" in outputs:
        warped = warp_native(session.pair.original_moving, field, session.fixed)
        ct = session.pair.normalisation.moving is None and session.pair.normalisation.fixed is None
        if "warped" in outputs:
            paths["warped"] = write_image(_stored(warped, ct), out_dir / FILES["warped"])
        if "difference" in outputs:
            difference = sitk.Subtract(warped, sitk.Cast(session.fixed, sitk.sitkFloat32))
            paths["difference"] = write_image(_stored(difference, ct), out_dir / FILES["difference"])
    if "displacement" in outputs:
        paths["displacement"] = write_displacement_field(field, out_dir / FILES["displacement"])
    quality_paths, quality, jacobian = write_quality_maps(session, field, out_dir, "quality_maps" in outputs)
    return {**paths, **quality_paths}, quality, field, jacobian


def _stored(image: sitk.Image, ct: bool) -> sitk.Image:
    """A CT image as whole HU (int16); any other image as it is (float32)."""
    if not ct:
        return image
    values = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), *HU_RANGE).astype(np.int16)
    stored = sitk.GetImageFromArray(values)
    stored.CopyInformation(image)
    return stored


def write_quality_maps(
    session, field: sitk.Image, out_dir: Path, maps: bool = True
) -> tuple[dict[str, Path], dict, sitk.Image]:
    """quality.json (det J statistics, folding, and a summary per RSO box); with ``maps`` also
    jacobian.nii.gz (det J), folding.nii.gz (det J <= 0) and change.nii.gz (the last step's |change|, mm)."""
    jacobian = jacobian_map(field)
    change = change_map(last_step_change(session)) if session.history else None
    quality = {
        "field": jacobian_summary(jacobian),
        "boxes": box_summaries(session.history, jacobian, change),
        "last_step": _last_step(session, change),
    }
    paths = {}
    if maps:
        paths["jacobian"] = write_image(jacobian, out_dir / FILES["jacobian"])
        paths["folding"] = write_image(folding_map(jacobian), out_dir / FILES["folding"])
    if maps and change is not None:
        paths["change"] = write_image(change, out_dir / FILES["change"])
    else:  # no step (all undone): a change map left from before would describe a step that is gone
        (out_dir / FILES["change"]).unlink(missing_ok=True)
    paths["quality"] = write_bytes_atomically(
        json.dumps(quality, indent=1).encode(), out_dir / FILES["quality"]
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
    session,
    out_dir: str | Path,
    figure: bool = True,
    labels: LabelInput | None = None,
    landmarks: tuple | None = None,
    inverse: bool = False,
    outputs=ALL_OUTPUTS,
) -> dict[str, Path]:
    """Write warped, displacement, transform.h5, difference, the quality maps, report.json and report.png into
    ``out_dir``, as ``outputs`` (OUTPUTS' names) asks; with ``inverse`` also inverse_displacement.nii.gz
    (``write_transforms``).

    With ``labels`` (drawn on the moving image) also labels_warped.nii.gz, labels_colors.txt and
    labels_report.json: the labels carried onto the fixed image. With ``landmarks`` (the paired fixed
    and moving rso.core.landmarks.Landmarks) each step's landmark TRE goes into the report
    (``landmark_tre_mm``) and the fixed points with their final errors into landmarks_tre.mrk.json.
    """
    out_dir = check_output_folder(out_dir)
    paths, quality, field, jacobian = _write_images(session, out_dir, outputs)
    report = {**build_report(session), "quality": quality}
    transform_paths, residual = write_transforms(session, field, out_dir, inverse)
    paths.update(transform_paths)
    if residual is not None:
        report["inverse"] = {"file": INVERSE_FILE, "round_trip_residual": residual}
    if labels is not None:
        label_paths, report["labels"] = write_propagated(labels, field, session.fixed, out_dir, jacobian)
        paths.update(label_paths)
    if landmarks is not None:
        paths["landmarks"] = add_landmark_report(report, session, landmarks, out_dir)
    report["files"] = sorted(path.name for path in paths.values())  # what this run wrote beside the report
    paths["report"] = write_bytes_atomically(json.dumps(report, indent=1).encode(), out_dir / "report.json")
    if figure:
        from rso.core.report_figure import report_figure  # matplotlib only when a figure is wanted

        paths["figure"] = report_figure(session, out_dir / "report.png")
    return paths


def write_transforms(
    session, field: sitk.Image, out_dir: Path, inverse: bool
) -> tuple[dict[str, Path], dict]:
    """transform.h5: the session's transform as ITK composes it (rso.core.composite: T0's parts, the
    model-grid field and each native window's correction), equal to ``field`` (the exported one). With
    ``inverse`` also inverse_displacement.nii.gz, the moving -> fixed field on the moving image's grid,
    and its round trip's residual in the body (mm; else None)."""
    initial = session.pair.initial_transform
    paths = {"transform": write_transform(session_transform_of(session), out_dir / "transform.h5")}
    if not inverse:  # an inverse left by an earlier run in this folder would describe another field
        (out_dir / INVERSE_FILE).unlink(missing_ok=True)
        return paths, None
    deformable = field if initial is None else native_field(session, initial=False)
    backward = inverse_field(deformable, initial, session.pair.original_moving)
    paths["inverse_displacement"] = write_displacement_field(backward, out_dir / INVERSE_FILE)
    return paths, round_trip_residual(field, backward, session.fixed)


def add_landmark_report(report: dict, session, landmarks: tuple, out_dir: Path) -> Path:
    """Landmark TRE (mm) before any step and after each, into ``report``; the fixed points with their final
    errors as a Slicer markups file (the error in each point's description)."""
    fixed, moving = landmarks
    before = landmark_tre(fixed.points, moving.points)
    after = [
        landmark_tre(fixed.points, moving.points, native_field(session, index))
        for index in range(1, len(session.history) + 1)
    ]
    for step, tre in zip(report["steps"], after):
        step["landmark_tre_mm"] = tre
    final = after[-1] if after else before
    report["landmark_tre_mm"] = {"count": before["count"], "initial": before, "final": final}
    return write_markups_json(fixed, out_dir / "landmarks_tre.mrk.json", errors_mm=final["per_point"])


def write_labels(session, labels: LabelInput, out_dir: str | Path) -> tuple[dict[str, Path], dict]:
    """The session's current field carries ``labels`` (drawn on the moving image) onto the fixed image."""
    check_labels_on(labels.image, session.pair.original_moving)
    return write_propagated(labels, native_field(session), session.fixed, check_output_folder(out_dir))


def matching_report(session) -> dict:
    """Whether the steps could compare artefact-matched images, each phase's geometry, and the one-off
    cost of matching (None where no step matched)."""
    pair = session.pair
    geometry = [g.summary() for g in pair.geometry] if pair.geometry else None
    return {"status": pair.matching_status(True), "geometry": geometry, "seconds": pair.matching_seconds}


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
        "artefact_matching": matching_report(session),
        "initial_transform": describe(session.pair.initial_transform),
        "steps": steps,
        "final": session.metrics() if session.history else None,
    }
