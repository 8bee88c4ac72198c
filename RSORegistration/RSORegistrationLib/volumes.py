"""Volume nodes <-> SimpleITK images with their full geometry.

Slicer stores a volume's geometry as one IJKToRAS matrix; SimpleITK stores spacing, origin and
direction in LPS. The two differ only by the sign of the first two physical axes, and that sign
flip is the engine's ``ras_to_lps`` (docs/architecture.md §3): no other conversion exists here.
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

log = logging.getLogger(__name__)


def ijk_to_ras(node) -> np.ndarray:
    """The volume's 4x4 IJK -> RAS matrix (its own geometry, parent transforms ignored)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])


def geometry_from_matrix(ijk_to_ras_matrix: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) in ITK's LPS convention from an IJK -> RAS matrix."""
    axes_ras = np.asarray(ijk_to_ras_matrix, float)[:3, :3]
    spacing = np.linalg.norm(axes_ras, axis=0)
    if np.any(spacing <= 0):
        raise InputError("volume has a zero spacing along an axis")
    # Columns are the i, j, k axes; ras_to_lps flips the first two components of each.
    direction_lps = ras_to_lps((axes_ras / spacing).T).T
    origin_lps = ras_to_lps(np.asarray(ijk_to_ras_matrix, float)[:3, 3])
    return tuple(spacing.tolist()), tuple(origin_lps.tolist()), tuple(direction_lps.ravel().tolist())


def matrix_from_geometry(image: sitk.Image) -> np.ndarray:
    """The IJK -> RAS matrix of a SimpleITK image (the inverse of ``geometry_from_matrix``)."""
    direction_lps = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = ras_to_lps(direction_lps.T).T @ np.diag(image.GetSpacing())
    matrix[:3, 3] = lps_to_ras(image.GetOrigin())
    return matrix


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            matrix.SetElement(i, j, float(array[i][j]))
    return matrix


def array_from_volume(node) -> np.ndarray:
    """The voxels as a (k, j, i) array: a copy, so that later edits never touch the node."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"volume {node.GetName() if node else None!r} holds no image data")
    dims = image.GetDimensions()
    components = image.GetNumberOfScalarComponents()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    return values.reshape(shape).copy()


def image_from_volume(node) -> sitk.Image:
    """A SimpleITK image with the node's voxels and geometry (parent transforms are not applied)."""
    array = array_from_volume(node)
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    spacing, origin, direction = geometry_from_matrix(ijk_to_ras(node))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def geometry_image(node) -> sitk.Image:
    """A 1-voxel-cheap stand-in with the node's size and geometry, for grid computations."""
    dims = node.GetImageData().GetDimensions()
    image = sitk.Image([int(n) for n in dims], sitk.sitkUInt8)
    spacing, origin, direction = geometry_from_matrix(ijk_to_ras(node))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def set_volume_image(node, image: sitk.Image) -> None:
    """Replace a volume node's voxels and geometry with a SimpleITK image's: one copy, the node's own (the
    voxels are read through a view of the image, never converted on the way)."""
    array = sitk.GetArrayViewFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    vtk_image = vtk.vtkImageData()
    vtk_image.SetDimensions(*image.GetSize())
    flat = array.reshape(-1, components) if components > 1 else array.reshape(-1)
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    vtk_image.GetPointData().SetScalars(scalars)
    node.SetAndObserveImageData(vtk_image)
    node.SetIJKToRASMatrix(vtk_matrix(matrix_from_geometry(image)))


def volume_from_image(
    scene, image: sitk.Image, name: str, node=None, node_class: str = "vtkMRMLScalarVolumeNode"
):
    """A new volume node (or ``node``, updated) holding the image, with default display."""
    if node is None:
        node = scene.AddNewNodeByClass(node_class, scene.GenerateUniqueName(name))
    set_volume_image(node, image)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def voxels_view(image_data) -> np.ndarray | None:
    """The vtkImageData's voxels as a writable (k, j, i[, c]) view (not a copy), or None if it has none."""
    scalars = image_data.GetPointData().GetScalars() if image_data is not None else None
    if scalars is None:
        return None
    dims, components = image_data.GetDimensions(), image_data.GetNumberOfScalarComponents()
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    return numpy_support.vtk_to_numpy(scalars).reshape(shape)


def fits(slices: tuple[slice, ...], shape) -> bool:
    """Every slice lies inside ``shape`` (an open end is the whole axis)."""
    return all(s.stop is None or s.stop <= n for s, n in zip(slices, shape))


def paste_into_volume(node, slices: tuple[slice, ...], values: np.ndarray | float) -> bool:
    """Write ``values`` into the (k, j, i) ``slices`` of the node's voxels and tell the views; False
    (and nothing written) when the node has no voxels or the block does not fit in them."""
    image = node.GetImageData() if node is not None else None
    voxels = voxels_view(image)
    if voxels is None or not fits(slices, voxels.shape):
        return False
    voxels[slices] = values
    image.GetPointData().GetScalars().Modified()
    image.Modified()
    node.Modified()
    node.InvokeEvent(slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, node)
    return True


def write_volume(node, path: str | Path) -> Path:
    """Write the volume through Slicer's own archetype storage node (the node's storage is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    if not storage.WriteData(node):
        raise InputError(f"could not write volume {node.GetName()!r} to {path}")
    return path


def read_volume(scene, path: str | Path, name: str, node=None):
    """Read an image file (LPS on disk) into a new or existing scalar volume node, in the file's own
    pixel type (int16 HU images stay int16: half the memory of float32, and no conversion)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"result file missing: {path}")
    return volume_from_image(scene, sitk.ReadImage(str(path)), name, node)
