"""A session's files on this side: the inputs written for the engine's ``open``, the check that a folder
can be reopened, and clearing stored sessions from the cache.

The engine keeps the session itself (rso.core.store); this module only decides what ``open`` is given.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path

from rso.core.store import holds_session
from rso.errors import InputError
from rso.service.remote import REMOTE_RECORD
from rso.settings import EngineSettings

from .parameters import RunParameters, file_path, settings_arguments
from .transforms import OUTPUT_ATTRIBUTE, field_from_transform_node, write_transform_file
from .volumes import write_volume


def apply_changes(params: RunParameters, changes: dict) -> RunParameters:
    """``params`` with ``changes`` (RunParameters field -> value) applied, then checked."""
    for name, value in changes.items():
        if not hasattr(params, name):
            raise InputError(f"unknown parameter {name!r}")
        setattr(params, name, value)
    params.check()
    check_not_transformed(params.fixedVolume)
    # A moving volume shown under the initial transform is registered through it once, not twice: the engine
    # reads its own voxels and T0, and the output transform (which includes T0) takes its place.
    check_not_transformed(params.movingVolume, allowed=params.initialTransform)
    if params.fitMask is not None:
        check_not_transformed(params.fitMask)
    if params.initialTransform is not None and params.initialTransform is params.outputTransform:
        params.outputTransform = None  # an earlier result as T0: the new result gets a node of its own
    return params


def open_arguments(params: RunParameters, cache_dir: Path, folder: str | Path | None = None) -> dict:
    """Write the inputs under a new staging folder of the cache; returns the worker's ``open`` arguments.

    ``folder``: where the engine keeps the session; by default ``session`` beside the inputs. A folder
    that already holds a session is refused (it is reopened, never overwritten).
    """
    staging = cache_dir / "sessions" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    inputs = staging / "inputs"
    session_folder = Path(folder) if folder else staging / "session"
    if holds_session(session_folder):
        raise InputError(
            f"{session_folder} already holds a session; reopen it instead of starting another there"
        )
    args = {
        "fixed": str(write_volume(params.fixedVolume, inputs / "fixed.nrrd")),
        "moving": str(write_volume(params.movingVolume, inputs / "moving.nrrd")),
        "folder": str(session_folder),
        "model": file_path(params.modelPath),
        **settings_arguments(params, EngineSettings),  # device, seed, allow_non_ct
        "truth": write_truth(params.truthTransform, inputs) if params.truthTransform else None,
        # RTK geometry XML files (both or neither: RunParameters.check) and the optional placement .tfm
        "fixed_geometry": file_path(params.fixedGeometryFile),
        "moving_geometry": file_path(params.movingGeometryFile),
        "placement": file_path(params.placementFile),
        # T0 (fixed -> moving points, composed before the general model), or the engine's pre-alignment
        "initial_transform": write_initial_transform(params.initialTransform, inputs)
        if params.initialTransform
        else None,
        "prealign": params.prealign or None,
        "fit_mask": str(write_volume(params.fitMask, inputs / "fit_mask.nrrd")) if params.fitMask else None,
    }
    args.update(advanced_model_args(params))
    return args


def write_truth(transform_node, folder: Path) -> str:
    """The ground-truth transform as the displacement field file the engine reads (for TRE)."""
    from rso.core.imageio import write_displacement_field

    return str(write_displacement_field(field_from_transform_node(transform_node), folder / "truth.nii.gz"))


def write_initial_transform(node, folder: Path) -> str:
    """T0 as the ITK transform file the engine reads (``folder``/initial_transform.h5), read back once so
    that a transform the engine cannot use is refused here, in one line, before the worker starts.

    The file holds the node's from-parent transform: fixed -> moving points (parameters.py explains why).
    """
    import SimpleITK as sitk

    from rso.core.initial import check_initial_transform

    name = node.GetName()
    parent = node.GetParentTransformNode()
    if parent is not None:
        raise InputError(
            f"initial transform {name!r} is under transform {parent.GetName()!r}; harden it first"
        )
    path = write_transform_file(node, folder / "initial_transform.h5")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        kind = re.search(r'instance of "(\w+?)_', str(exc))
        raise InputError(
            f"initial transform {name!r} holds {kind.group(1) if kind else 'a transform'}, which only Slicer "
            "reads: convert it to a linear or grid transform (Transforms module) first"
        ) from None
    check_initial_transform(transform, repr(name))
    return str(path)


def check_not_transformed(volume, allowed=None) -> None:
    """The engine sees a volume's own voxels: a transform the user put it under would be silently lost.
    ``allowed``: a parent transform the engine is given itself (the initial transform)."""
    transform = volume.GetParentTransformNode()
    if transform is not None and transform is not allowed and not transform.GetAttribute(OUTPUT_ATTRIBUTE):
        raise InputError(
            f"volume {volume.GetName()!r} is under transform {transform.GetName()!r}; "
            "harden it first (the engine registers the volume's own voxels)"
        )


def advanced_model_args(params: RunParameters) -> dict:
    """Untrained-network channels and model grid, for tests and tiny demos ("4,8,16,32,64", "32,64,64")."""
    args = {}
    for name, key in (("modelChannels", "channels"), ("gridShape", "grid")):
        text = getattr(params, name)
        if text:
            try:
                args[key] = [int(v) for v in text.replace(" ", "").split(",")]
            except ValueError:
                raise InputError(f"{name} must be whole numbers separated by commas, not {text!r}") from None
    return args


def check_reopenable(folder: str) -> None:
    """A folder the engine can reopen: a saved session, or the record of one kept on a remote engine."""
    if not folder or not (holds_session(folder) or (Path(folder) / REMOTE_RECORD).is_file()):
        raise InputError(f"no saved session to reopen{f' in {folder}' if folder else ''}")


def clear_sessions(cache_dir: Path, keep: Path | None = None) -> int:
    """Delete the stored sessions under the cache except ``keep``; returns how many were deleted."""
    removed = 0
    for folder in sorted((cache_dir / "sessions").glob("*")):
        if folder != keep and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
