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
from rso.core.imageio import (
    write_bytes_atomically,
    write_displacement_array,
    write_displacement_field,
    write_image,
)
from rso.core.initial import (
    describe,
    inverse_field,
    round_trip_residual,
    write_transform,
)
from rso.core.labels import LabelInput, check_labels_on, write_propagated
from rso.core.landmarks import landmark_tre, write_markups_json
from rso.core.native_grid import last_step_change_mm, native_field
from rso.core.nifti_slabs import streamable
from rso.core.overlay import whole_products, write_whole_products
from rso.core.quality import box_summaries, folding_map, jacobian_summary
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


def image_files(compress: bool = True) -> dict[str, str]:
    """``FILES``, with the images gzipped (results) or not (the viewer's files in <session>/current/,
    rewritten after every whole-image step: at 1 mm gzip took ~35 s of a 60 s rewrite and saved < 10 %
    of the float maps' bytes)."""
    return dict(FILES) if compress else {name: file.removesuffix(".gz") for name, file in FILES.items()}


def check_outputs(outputs) -> tuple[str, ...]:
    """The outputs asked for, each known; InputError names an unknown one."""
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(unknown)}; outputs: {', '.join(OUTPUTS)} (or all)")
    return tuple(outputs)


def session_transform_of(session, index: int | None = None) -> sitk.Transform:
    """The field after step ``index`` (None: the current one) with T0, as one ITK transform in the form it
    has (rso.core.composite): the model-grid field and the native windows, never a dense field."""
    state = session.state if index is None else session.state_at(index)
    coarse = CoarseField(session.grid, session.grid.voxels_to_mm(state.field))
    return session_transform(coarse, state.patches, session.pair.initial_transform, session.fixed)


def write_images(session, out_dir: Path, outputs=ALL_OUTPUTS, compress: bool = True) -> dict[str, Path]:
    """warped, displacement and difference, and the quality maps, at the fixed image's resolution, named
    as ``image_files(compress)`` names them."""
    return _write_images(session, out_dir, outputs, compress)[0]


def _write_images(
    session, out_dir: Path, outputs, compress: bool = True
) -> tuple[dict[str, Path], dict, sitk.Image]:
    """The images of ``write_images`` that ``outputs`` names (a file of an output not asked for, left by
    an earlier run, is removed); also the quality summary and det J (for labels).

    The images are built a slab of the fixed grid at a time (rso.core.overlay.whole_products): at 1 mm
    the whole native field alone is 12 bytes a voxel, and it is held only when it is written. Uncompressed
    (the viewer's files, rewritten after every whole-image step) each slab goes straight into its file
    (rso.core.overlay.write_whole_products) and no whole image but det J is held."""
    outputs = check_outputs(outputs)
    files = image_files(compress)
    for name in set(OUTPUTS) - set(outputs):
        for file in OUTPUTS[name]:
            (out_dir / files[file]).unlink(missing_ok=True)
    wanted = [name for name in ("warped", "difference", "displacement") if name in outputs]
    maps = "quality_maps" in outputs
    if not compress and streamable(session.fixed):
        streamed = (*wanted, *(("jacobian", "folding") if maps else ()))
        paths, jacobian = write_whole_products(session, {name: out_dir / files[name] for name in streamed})
        quality_paths, quality = write_quality_maps(session, jacobian, out_dir, maps, compress, paths)
        return {**paths, **quality_paths}, quality, jacobian
    images = whole_products(session, (*wanted, "jacobian"), as_arrays=("displacement",))
    paths = {}
    for name in ("warped", "difference"):
        if name in images:
            paths[name] = write_image(images.pop(name), out_dir / files[name], compress)
    if "displacement" in images:
        displacement = out_dir / files["displacement"]
        paths["displacement"] = write_displacement_array(
            images.pop("displacement"), session.fixed, displacement
        )
    jacobian = images.pop("jacobian")
    quality_paths, quality = write_quality_maps(session, jacobian, out_dir, maps, compress)
    return {**paths, **quality_paths}, quality, jacobian


def write_quality_maps(
    session, jacobian: sitk.Image, out_dir: Path, maps: bool = True, compress: bool = True, written=None
) -> tuple[dict[str, Path], dict]:
    """quality.json (det J statistics, folding, and a summary per RSO box) from the field's det J; with
    ``maps`` also jacobian.nii.gz (det J), folding.nii.gz (det J <= 0) and change.nii.gz (the last step's
    |change|, mm), named as ``image_files(compress)`` names them. ``written``: maps already written (name
    -> path, rso.core.overlay.write_whole_products), not written again."""
    files = image_files(compress)
    written = written or {}
    change = last_step_change_mm(session) if session.history else None
    quality = {
        "field": jacobian_summary(jacobian),
        "boxes": box_summaries(session.history, jacobian, change),
        "last_step": _last_step(session, change),
    }
    paths = {}
    if maps:
        jacobian_file, folding_file = out_dir / files["jacobian"], out_dir / files["folding"]
        paths["jacobian"] = written.get("jacobian") or write_image(jacobian, jacobian_file, compress)
        paths["folding"] = written.get("folding") or write_image(
            folding_map(jacobian), folding_file, compress
        )
    if maps and change is not None:
        paths["change"] = write_image(change, out_dir / files["change"], compress)
    else:  # no step (all undone): a change map left from before would describe a step that is gone
        (out_dir / files["change"]).unlink(missing_ok=True)
    paths["quality"] = write_bytes_atomically(
        json.dumps(quality, indent=1).encode(), out_dir / files["quality"]
    )
    return paths, quality


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
    declined=(),
) -> dict[str, Path]:
    """Write warped, displacement, transform.h5, difference, the quality maps, report.json and report.png into
    ``out_dir``, as ``outputs`` (OUTPUTS' names) asks; with ``inverse`` also inverse_displacement.nii.gz
    (``write_transforms``).

    With ``labels`` (drawn on the moving image) also labels_warped.nii.gz, labels_colors.txt and
    labels_report.json: the labels carried onto the fixed image. With ``landmarks`` (the paired fixed
    and moving rso.core.landmarks.Landmarks) each step's landmark TRE goes into the report
    (``landmark_tre_mm``) and the fixed points with their final errors into landmarks_tre.mrk.json.
    ``declined``: the run's declined steps (StepRecord), listed in the report with why (``declined_steps``).
    """
    out_dir = check_output_folder(out_dir)
    paths, quality, jacobian = _write_images(session, out_dir, outputs)
    report = {**build_report(session), "quality": quality}
    report["declined_steps"] = [_step_entry(record) for record in declined]
    transform_paths, residual = write_transforms(session, out_dir, inverse)
    paths.update(transform_paths)
    if residual is not None:
        report["inverse"] = {"file": INVERSE_FILE, "round_trip_residual": residual}
    if labels is not None:
        field = native_field(session)
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


def write_transforms(session, out_dir: Path, inverse: bool) -> tuple[dict[str, Path], dict]:
    """transform.h5: the session's transform as ITK composes it (rso.core.composite: T0's parts, the
    model-grid field and each native window's correction), equal to ``native_field``. With
    ``inverse`` also inverse_displacement.nii.gz, the moving -> fixed field on the moving image's grid,
    and its round trip's residual in the body (mm; else None)."""
    initial = session.pair.initial_transform
    paths = {"transform": write_transform(session_transform_of(session), out_dir / "transform.h5")}
    if not inverse:  # an inverse left by an earlier run in this folder would describe another field
        (out_dir / INVERSE_FILE).unlink(missing_ok=True)
        return paths, None
    field = native_field(session)
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
    scans = pair.scans
    geometry = [g.summary() for g in scans.geometries] if scans else None
    report = {"status": pair.matching_status(True), "geometry": geometry, "seconds": pair.matching_seconds}
    return report | ({"reconstruction": scans.reconstruction} if scans else {})


def _step_entry(record) -> dict:
    """A step's record as the report lists it (its box in RAS only)."""
    step = record.to_dict()
    step.pop("box", None)
    return step


def build_report(session) -> dict:
    steps = [_step_entry(record) for record in session.history]
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
