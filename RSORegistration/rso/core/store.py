"""A session's folder on disk: its inputs, one state per accepted step, and the manifest.

    session.json              the manifest: format, grid, model, loss, seed, precision, inputs, the
                              network inputs' normalisation, steps
    fixed.nii.gz, moving...   the inputs as the session was given them (fit_mask.nii.gz: the fit mask)
    initial_transform.h5      the initial transform (rso.core.initial), when the session has one
    states/0000/              the state before any step; states/k/ the state after step k:
        field.npy             (3, z, y, x) model-grid voxels
        patches.npz           fine-resolution corrections of native RSO steps (when there are any)
        weights.pt            the network weights, only where a step changed them;
        state.json            otherwise names the state whose weights.pt holds them

Every file is written atomically (a temporary name, then a rename), and a state is written before
the manifest that names it, so a crash loses at most the step in flight (docs/architecture.md §4).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.imageio import (
    read_image,
    read_truth_field,
    write_bytes_atomically,
    write_displacement_field,
    write_image,
)
from rso.core.initial import INITIAL_TRANSFORM, read_initial_transform, write_transform
from rso.core.patches import FieldPatch
from rso.errors import InputError

SESSION_FORMAT = "rso-registration-session"
MANIFEST = "session.json"


@dataclass
class SessionState:
    """What undo restores: the coarse field, the fine patches on top of it, and the network weights.

    ``field`` is (3, z, y, x) in model-grid voxels. ``weights_from`` is the index of the state
    whose weights these are: a step that leaves the weights alone (direct and native RSO) shares
    them instead of storing another copy.
    """

    field: np.ndarray
    weights: dict
    weights_from: int = 0
    patches: tuple[FieldPatch, ...] = field(default_factory=tuple)


def holds_session(folder: str | Path) -> bool:
    """Whether ``folder`` holds a session (its manifest), to be reopened rather than started."""
    return (Path(folder) / MANIFEST).is_file()


def input_path(folder: str | Path, name: str) -> Path:
    """Where a session keeps an input ("fixed", "moving", "reference", "truth", "mask", "fit_mask")."""
    return Path(folder) / (f"{name}.h5" if name == INITIAL_TRANSFORM else f"{name}.nii.gz")


class SessionStore:
    """Reads and writes one session folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @classmethod
    def create(cls, folder: str | Path) -> SessionStore:
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"session folder {folder} is a file")
        if (folder / MANIFEST).exists():
            raise InputError(f"{folder} already holds a session; open it with RegistrationSession.open")
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder)

    # ------------------------------------------------------------------------------ states
    def state_folder(self, index: int) -> Path:
        return self.folder / "states" / f"{index:04d}"

    def save_state(self, index: int, state: SessionState) -> None:
        """Write state ``index`` into a temporary folder, then rename it into place."""
        folder = self.state_folder(index)
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "field.npy", state.field)
        if state.patches:
            np.savez(
                tmp / "patches.npz",
                **{f"{i}_{k}": v for i, p in enumerate(state.patches) for k, v in p.to_arrays().items()},
            )
        if state.weights_from == index:
            import torch  # here, not at file scope: viewers read a folder's inputs without torch

            torch.save(state.weights, tmp / "weights.pt")
        (tmp / "state.json").write_text(
            json.dumps({"weights_from": state.weights_from, "patches": len(state.patches)})
        )
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def load_state(self, index: int) -> SessionState:
        folder = self.state_folder(index)
        meta_path = folder / "state.json"
        meta = (
            json.loads(meta_path.read_text())
            if meta_path.is_file()
            else {"weights_from": index, "patches": 0}
        )
        source = self.state_folder(meta["weights_from"]) / "weights.pt"
        import torch

        weights = torch.load(source, map_location="cpu", weights_only=True)
        patches = ()
        if meta["patches"]:
            with np.load(folder / "patches.npz") as stored:
                patches = tuple(
                    FieldPatch.from_arrays(
                        {k.split("_", 1)[1]: stored[k] for k in stored.files if k.split("_", 1)[0] == str(i)}
                    )
                    for i in range(meta["patches"])
                )
        return SessionState(np.load(folder / "field.npy"), weights, meta["weights_from"], patches)

    def remove_state(self, index: int) -> None:
        shutil.rmtree(self.state_folder(index), ignore_errors=True)

    def remove_orphan_states(self, steps: int) -> None:
        """States written by a step that crashed before its manifest was: not part of the session."""
        for path in (self.folder / "states").iterdir():
            if path.name.startswith(".") or int(path.name) > steps:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------------------ inputs
    def write_inputs(self, images: dict[str, sitk.Image | sitk.Transform]) -> None:
        for name, image in images.items():
            if name == INITIAL_TRANSFORM:
                write_transform(image, input_path(self.folder, name))
            elif name == "truth":
                write_displacement_field(image, input_path(self.folder, name))
            else:
                write_image(_compact(image), input_path(self.folder, name))

    def read_input(self, name: str) -> sitk.Image | sitk.Transform:
        path = input_path(self.folder, name)
        if name == INITIAL_TRANSFORM:
            return read_initial_transform(path)
        return read_truth_field(path, name) if name == "truth" else read_image(path, name)

    # ------------------------------------------------------------------------------ manifest
    def write_manifest(self, manifest: dict) -> None:
        manifest = {"format": SESSION_FORMAT, **manifest}
        write_bytes_atomically(json.dumps(manifest, indent=1).encode(), self.folder / MANIFEST)

    def read_manifest(self) -> dict:
        path = self.folder / MANIFEST
        if not path.is_file():
            raise InputError(f"{self.folder} holds no session ({MANIFEST} missing)")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is corrupt: {exc}") from None
        if manifest.get("format") != SESSION_FORMAT:
            raise InputError(f"{path} is not an RSORegistration session")
        return manifest


def _compact(image: sitk.Image) -> sitk.Image:
    """CT in whole HU fits int16 at half the size; anything else is kept as it is."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        return image
    values = sitk.GetArrayViewFromImage(image)
    if np.all(values == np.round(values)) and values.min() >= -32768 and values.max() <= 32767:
        return sitk.Cast(image, sitk.sitkInt16)
    return image
