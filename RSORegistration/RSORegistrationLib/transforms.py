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
    spacing, origin, direction_ras = ras_geometry(field)
    direction = np.eye(4)
    direction[:3, :3] = direction_ras
    # One float64 copy (k, j, i, 3), turned to RAS in place and lent to VTK (numpy_support keeps it alive):
    # a truth at 1 mm is 1.2 GB a copy, and each extra one is another.
    vectors_ras = np.array(sitk.GetArrayViewFromImage(field), dtype=np.float64)
    vectors_ras[..., :2] *= -1
    grid = vtk.vtkImageData()
    grid.SetDimensions(*field.GetSize())
    grid.SetSpacing(*spacing)
    grid.SetOrigin(*origin)
    grid.GetPointData().SetScalars(numpy_support.numpy_to_vtk(vectors_ras.reshape(-1, 3), deep=False))
    transform = slicer.vtkOrientedGridTransform()  # vtkAddon, not plain VTK
    transform.SetInterpolationModeToLinear()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(vtk_matrix(direction))
    return transform


def ras_geometry(image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing (3,) mm, origin (3,) RAS mm, direction (3, 3) RAS, columns i, j, k) of a grid in ITK's LPS
    terms: an ``sitk.Image`` or an ``sitk.ImageFileReader`` that has read the file's information."""
    geometry = matrix_from_geometry(image)  # IJK -> RAS of the grid
    spacing = np.array(image.GetSpacing())
    return spacing, geometry[:3, 3], geometry[:3, :3] / spacing


def grid_direction(transform) -> np.ndarray:
    """The (3, 3) RAS direction of a vtkOrientedGridTransform's grid (identity where none is set)."""
    matrix = transform.GetGridDirectionMatrix()
    if matrix is None:
        return np.eye(3)
    return np.array([[matrix.GetElement(i, j) for j in range(3)] for i in range(3)])


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
    vectors = np.array(vectors, dtype=np.float64)  # the one copy besides SimpleITK's own, turned to LPS in it
    vectors[..., :2] *= -1
    field = sitk.GetImageFromArray(vectors, isVector=True)
    direction_ras = grid_direction(transform)
    field.SetSpacing(grid.GetSpacing())
    field.SetOrigin(ras_to_lps(grid.GetOrigin()).tolist())
    field.SetDirection(ras_to_lps(direction_ras.T).T.ravel().tolist())
    return field


def paste_into_grid_transform(node, slices: tuple[slice, ...], field_lps: np.ndarray) -> bool:
    """Write a (k, j, i, 3) block of an ITK displacement field (LPS mm) into the node's grid transform at
    ``slices``; False (and nothing written) when the node holds no grid or the block does not fit."""
    transform = grid_transform_of(node)
    if transform is None:
        return False
    grid = transform.GetDisplacementGrid()
    vectors = voxels_view(grid)
    if vectors is None or vectors.ndim != 4 or not fits(slices, vectors.shape):
        return False
    vectors[slices] = lps_to_ras(field_lps)  # the grid holds RAS vectors (Slicer's convention)
    grid_modified(node, transform)
    return True


def grid_transform_of(node):
    """The node's from-parent vtkOrientedGridTransform, or None (no node, another kind of transform)."""
    transform = node.GetTransformFromParent() if node is not None else None
    if transform is None or not transform.IsA("vtkOrientedGridTransform"):
        return None
    return transform


def grid_modified(node, transform) -> None:
    """Tell the grid, its transform and the node's observers (the views) that the displacements changed."""
    grid = transform.GetDisplacementGrid()
    grid.GetPointData().GetScalars().Modified()
    grid.Modified()
    transform.Modified()
    node.Modified()
    node.InvokeEvent(slicer.vtkMRMLTransformableNode.TransformModifiedEvent, node)


def refill_grid_transform(node, path: str | Path) -> bool:
    """Write a displacement field file (LPS mm) into the grid the node's transform already holds, in place;
    False (nothing written) when the node holds no grid or the file's grid is another one.

    Slicer's reader would build a new double grid (49 M voxels: 1.2 GB) from an ITK double image (1.2 GB)
    while the node still holds the old grid: ~3.5 GB at once. Here only the file's own voxels (float32:
    0.6 GB) are read, and written into the old grid slab by slab.
    """
    transform = grid_transform_of(node)
    field = _field_on_grid(transform, path) if transform is not None else None
    if field is None:
        return False
    vectors = voxels_view(transform.GetDisplacementGrid())  # (k, j, i, 3) RAS, a view of the grid
    values = sitk.GetArrayViewFromImage(field)  # (k, j, i, 3) LPS mm, the file's own type
    for start in range(0, len(vectors), SLAB_PLANES):  # bounds numpy's conversion buffers to a slab
        planes = slice(start, start + SLAB_PLANES)
        np.multiply(values[planes], LPS_TO_RAS_SIGNS, out=vectors[planes])
    grid_modified(node, transform)
    return True


SLAB_PLANES = 16  # k planes written at a time by refill_grid_transform
LPS_TO_RAS_SIGNS = np.array([-1.0, -1.0, 1.0])  # a vector's components LPS -> RAS (as lps_to_ras)
GRID_ATOL_MM = 1e-6  # the same header read twice by ITK: equal up to rounding


def _field_on_grid(transform, path: str | Path) -> sitk.Image | None:
    """The file's field as ITK reads it (LPS mm) if it lies on the transform's grid; None otherwise, or where
    ITK cannot read it (an .h5 transform, a broken file): Slicer's reader then takes it, or says why not."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: a field on another grid is never read twice
        return reader.Execute() if same_grid(transform, reader) else None
    except RuntimeError:
        return None


def same_grid(transform, reader: sitk.ImageFileReader) -> bool:
    """The file (its information read) is a 3-component 3-D field on exactly the grid the transform holds,
    with the plain scale and shift that Slicer's reader gives a grid."""
    grid = transform.GetDisplacementGrid()
    if grid is None or reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 3:
        return False
    if grid.GetNumberOfScalarComponents() != 3 or tuple(grid.GetDimensions()) != tuple(reader.GetSize()):
        return False
    if transform.GetDisplacementScale() != 1.0 or transform.GetDisplacementShift() != 0.0:
        return False
    spacing, origin, direction = ras_geometry(reader)
    pairs = ((grid.GetSpacing(), spacing), (grid.GetOrigin(), origin), (grid_direction(transform), direction))
    return all(np.allclose(held, given, rtol=0.0, atol=GRID_ATOL_MM) for held, given in pairs)


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


def reload_transform_file(scene, path: str | Path, name: str, node=None):
    """``read_transform_file`` for a node refreshed step after step: a field on the grid the node already
    holds is written into that grid in place (``refill_grid_transform``), anything else is read anew."""
    if node is not None and refill_grid_transform(node, path):
        return node
    return read_transform_file(scene, path, name, node)


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
