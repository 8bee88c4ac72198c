"""The engine's displacement field <-> a Slicer grid transform, and the moving volume under it.

The engine's field maps fixed points to moving points in LPS millimetres: ITK's resampling
transform. Slicer keeps such a transform as the node's "from parent" transform, so that a volume
placed under it is shown resampled into the fixed frame (the views re-warp live when it changes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from rso.core.geometry import lps_to_ras, ras_to_lps
from rso.errors import InputError

from .volumes import fits, matrix_from_geometry, voxels_view, vtk_matrix

log = logging.getLogger(__name__)

OUTPUT_ATTRIBUTE = "RSORegistration.output"  # marks the module's own output nodes


def grid_transform_from_field(field: sitk.Image) -> slicer.vtkOrientedGridTransform:
    """A VTK grid transform equal to an ITK displacement field (LPS mm, fixed -> moving)."""
    if field.GetDimension() != 3 or field.GetNumberOfComponentsPerPixel() != 3:
        raise InputError("a displacement field needs 3 components per voxel in 3-D")
    geometry = matrix_from_geometry(field)  # IJK -> RAS of the field's grid
    spacing = np.array(field.GetSpacing())
    direction = np.eye(4)
    direction[:3, :3] = geometry[:3, :3] / spacing
    vectors_ras = lps_to_ras(sitk.GetArrayFromImage(field).astype(np.float64))  # (k, j, i, 3)
    grid = vtk.vtkImageData()
    grid.SetDimensions(*field.GetSize())
    grid.SetSpacing(*spacing)
    grid.SetOrigin(*geometry[:3, 3])
    grid.GetPointData().SetScalars(numpy_support.numpy_to_vtk(vectors_ras.reshape(-1, 3), deep=True))
    transform = slicer.vtkOrientedGridTransform()  # vtkAddon, not plain VTK
    transform.SetInterpolationModeToLinear()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(vtk_matrix(direction))
    return transform


def set_transform_field(node, field: sitk.Image) -> None:
    """Make a grid transform node hold the field as its from-parent (resampling) transform."""
    node.SetAndObserveTransformFromParent(grid_transform_from_field(field))


def transform_node_from_field(scene, field: sitk.Image, name: str, node=None):
    """A new (or updated) vtkMRMLGridTransformNode holding the engine's field."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", scene.GenerateUniqueName(name))
    set_transform_field(node, field)
    return node


def field_from_transform_node(node) -> sitk.Image:
    """The node's grid transform back as an ITK displacement field (LPS mm, fixed -> moving)."""
    transform = node.GetTransformFromParent()
    if transform is None or not transform.IsA("vtkOrientedGridTransform"):
        raise InputError(f"transform {node.GetName()!r} holds no grid transform")
    grid = transform.GetDisplacementGrid()
    dims = grid.GetDimensions()
    vectors = numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars()).reshape(
        dims[2], dims[1], dims[0], 3
    )
    field = sitk.GetImageFromArray(ras_to_lps(vectors.astype(np.float64)), isVector=True)
    direction_ras = np.eye(3)
    matrix = transform.GetGridDirectionMatrix()
    if matrix is not None:
        direction_ras = np.array([[matrix.GetElement(i, j) for j in range(3)] for i in range(3)])
    field.SetSpacing(grid.GetSpacing())
    field.SetOrigin(ras_to_lps(grid.GetOrigin()).tolist())
    field.SetDirection(ras_to_lps(direction_ras.T).T.ravel().tolist())
    return field


def paste_into_grid_transform(node, slices: tuple[slice, ...], field_lps: np.ndarray) -> bool:
    """Write a (k, j, i, 3) block of an ITK displacement field (LPS mm) into the node's grid transform at
    ``slices``; False (and nothing written) when the node holds no grid or the block does not fit."""
    transform = node.GetTransformFromParent() if node is not None else None
    if transform is None or not transform.IsA("vtkOrientedGridTransform"):
        return False
    grid = transform.GetDisplacementGrid()
    vectors = voxels_view(grid)
    if vectors is None or vectors.ndim != 4 or not fits(slices, vectors.shape):
        return False
    vectors[slices] = lps_to_ras(field_lps)  # the grid holds RAS vectors (Slicer's convention)
    grid.GetPointData().GetScalars().Modified()
    grid.Modified()
    transform.Modified()
    node.Modified()
    node.InvokeEvent(slicer.vtkMRMLTransformableNode.TransformModifiedEvent, node)
    return True


class VtkMessages:
    """Collects VTK warnings and errors raised in a block (Slicer's readers report through VTK)."""

    def __enter__(self):
        self._previous = vtk.vtkOutputWindow.GetInstance()
        self._window = vtk.vtkStringOutputWindow()
        vtk.vtkOutputWindow.SetInstance(self._window)
        return self

    def __exit__(self, *exc):
        self.text = self._window.GetOutput()
        vtk.vtkOutputWindow.SetInstance(self._previous)

    @property
    def messages(self) -> list[str]:
        return [block.strip() for block in self.text.split("\n\n") if block.strip()]


def read_transform_file(scene, path: str | Path, name: str, node=None):
    """Read a displacement field file with Slicer's own transform storage node.

    Slicer warns when a NIfTI field lacks intent code 1006; every such warning is logged here so
    that a wrongly written file never passes silently.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"displacement field missing: {path}")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", scene.GenerateUniqueName(name))
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    with VtkMessages() as messages:
        ok = storage.ReadData(node)
    for message in messages.messages:
        log.warning("reading %s: %s", path.name, message)
    if not ok:
        raise InputError(f"Slicer could not read the displacement field {path}")
    return node


def write_transform_file(node, path: str | Path) -> Path:
    """Write a transform node with Slicer's own transform storage node (the node's storage is untouched).

    Slicer writes the node's from-parent transform, the one that resamples a volume placed under the
    node: for a registration's "moving to fixed" output that maps fixed points to moving points, ITK's
    convention (LPS on disk). ``.h5`` holds linear, grid and composite transforms alike.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    with VtkMessages() as messages:
        ok = storage.WriteData(node)
    if not ok:
        reason = messages.messages[-1].splitlines()[-1] if messages.messages else "no reason given"
        raise InputError(f"could not write transform {node.GetName()!r} to {path}: {reason}")
    return path


def place_under(volume, transform_node, replaceable=None) -> None:
    """Show ``volume`` through the transform; refuse to silently replace a transform the user set, other than
    ``replaceable`` (the initial transform the result includes)."""
    current = volume.GetParentTransformNode()
    if (
        current is not None
        and current is not transform_node
        and current is not replaceable
        and not current.GetAttribute(OUTPUT_ATTRIBUTE)
    ):
        raise InputError(
            f"volume {volume.GetName()!r} is already under transform {current.GetName()!r}; "
            "harden or remove that transform first"
        )
    volume.SetAndObserveTransformNodeID(transform_node.GetID() if transform_node is not None else None)
