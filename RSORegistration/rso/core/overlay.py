"""The viewer's images after a native step, computed on the window the step changed and nowhere else.

A native RSO step adds a patch that is exactly zero beyond its box + margin and leaves the coarse
field as it was (local composition, docs/architecture.md §4). Outside the patch's window the field,
the warped and difference images and det J are therefore what they were before the step, and
``window_products`` computes them on that window alone: the step's cost in the viewer follows the
box, not the image. A viewer pastes the window into the volumes it already shows
(RSORegistrationLib.results); whole-volume files are rewritten only when something asks for them.
``whole_products`` builds the whole images from slabs of the same windows, so that the whole native
field (12 bytes a voxel) is never held unless it is written; ``write_whole_products`` writes each slab
straight into its uncompressed file (rso.core.nifti_slabs), so that no whole image is held at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.boxes import VoxelBox
from rso.core.geometry import ModelGrid
from rso.core.imageio import write_image
from rso.core.initial import composed_field
from rso.core.native_grid import (
    is_ct,
    on_fixed_grid,
    patches_on_fixed_grid,
    stored_image,
    warp_native,
)
from rso.core.nifti_slabs import SlabFile
from rso.core.optimize import relative_to
from rso.core.quality import change_map, folding_map, jacobian_map

# det J's central differences reach one voxel beyond the window, so it is computed on the window
# grown by this many voxels and cropped: inside the window it equals the whole image's det J.
HALO_VOXELS = 1
PATCH_SUFFIX = ".nrrd"  # uncompressed: a window is a few MB, and gzip would cost more than the step


def changed_window(session) -> VoxelBox | None:
    """The window of the fixed grid that the last step changed, when it only added fine patches to an
    unchanged coarse field (a native step); None when the step changed the field anywhere else."""
    if not session.history:
        return None
    before, after = session.state_at(len(session.history) - 1), session.state
    kept = len(before.patches)
    added = after.patches[kept:]
    same = len(after.patches) > kept and all(a is b for a, b in zip(after.patches, before.patches))
    if not same or not np.array_equal(after.field, before.field):
        return None
    grid = ModelGrid.of_image(session.fixed)
    windows = [patch.window_on(grid) for patch in added]
    start = tuple(min(s[axis].start for s in windows) for axis in range(3))
    stop = tuple(max(s[axis].stop for s in windows) for axis in range(3))
    return VoxelBox(start, stop).expanded(HALO_VOXELS, grid.shape)


PRODUCTS = ("warped", "difference", "displacement", "jacobian", "folding", "change")
# The whole images are built a slab of the fixed grid at a time; a slab's field, warped image, det J and
# their temporaries take about 64 bytes a voxel, so a slab of this many voxels costs ~0.4 GB at most.
WHOLE_SLAB_VOXELS = 6_000_000


def window_products(session, window: VoxelBox, names=PRODUCTS) -> dict[str, sitk.Image]:
    """The viewer's images of the current field on ``window`` of the fixed grid, those in ``names`` (of
    ``PRODUCTS``, named as rso.core.results.FILES names them): warped and difference (int16 HU for CT),
    displacement ((z, y, x, 3) LPS mm, float32, with T0), jacobian (float32), folding (uint8) and change
    (|the last step's patches|, mm: the last step's change when it was a native step). Each equals the
    whole image's at the same voxels."""
    shape = ModelGrid.of_image(session.fixed).shape
    outer = window.expanded(HALO_VOXELS, shape)  # det J's halo
    inner = relative_to(window, outer)
    state = session.state
    field = on_fixed_grid(session, state.field, state.patches, reference=_crop(session.fixed, outer.slices))
    field = composed_field(field, session.pair.initial_transform)
    products = {}
    if "jacobian" in names or "folding" in names:
        products["jacobian"] = _crop(jacobian_map(field), inner)
        products["folding"] = folding_map(products["jacobian"])
    field = _crop(field, inner)
    fixed = _crop(session.fixed, window.slices)
    if "warped" in names or "difference" in names:
        warped = warp_native(session.pair.original_moving, field, fixed)
        ct = is_ct(session)
        products["warped"] = stored_image(warped, ct)
        products["difference"] = stored_image(sitk.Subtract(warped, sitk.Cast(fixed, sitk.sitkFloat32)), ct)
    if "change" in names:
        kept = len(session.state_at(len(session.history) - 1).patches)
        products["change"] = change_map(patches_on_fixed_grid(session, state.patches[kept:], reference=fixed))
    products["displacement"] = field
    return {name: image for name, image in products.items() if name in names}


def whole_products(session, names, as_arrays=()) -> dict[str, sitk.Image | np.ndarray]:
    """``window_products`` of the whole fixed grid (not ``change``), built a slab of slices at a time: the
    whole field at native resolution (12 bytes a voxel) is never held, unless ``displacement`` is asked
    for. Each image equals the one computed on the whole grid at once. Those in ``as_arrays`` come as
    (z, y, x[, 3]) numpy arrays on the fixed grid (no image copy of them is made)."""
    shape = ModelGrid.of_image(session.fixed).shape
    arrays: dict[str, np.ndarray] = {}
    for window in _slabs(shape):
        for name, image in window_products(session, window, names).items():
            values = sitk.GetArrayViewFromImage(image)
            if name not in arrays:
                arrays[name] = np.empty(shape + values.shape[3:], values.dtype)
            arrays[name][window.slices] = values
    images = {name: arrays.pop(name) for name in as_arrays if name in arrays}
    for name in list(arrays):
        values = arrays.pop(name)  # each array goes as its image is made: one extra copy at a time
        images[name] = sitk.GetImageFromArray(values, isVector=values.ndim == 4)
        images[name].CopyInformation(session.fixed)
        del values
    return images


def write_whole_products(session, files: dict[str, Path]) -> tuple[dict[str, Path], sitk.Image]:
    """``whole_products`` written a slab at a time into uncompressed NIfTI files: ``files`` names the
    ``.nii`` path of each product to write (warped, difference, displacement, jacobian, folding), and
    each slab goes into its file as it is computed, so that one slab of each is held, never a whole
    image. Each file is byte for byte the one ``write_image`` (``write_displacement_array`` for the
    displacement) makes of the whole image, and is put in place atomically once every file is complete:
    if computing or writing a slab fails, every file stays the one before. Returns the paths and det J
    (float32, on the fixed grid: read back from its file when it is one of them, else gathered slab by
    slab)."""
    shape = ModelGrid.of_image(session.fixed).shape
    names = (*files, *(() if "jacobian" in files else ("jacobian",)))
    jacobian = None if "jacobian" in files else np.empty(shape, np.float32)
    slabs: dict[str, SlabFile] = {}
    try:
        for window in _slabs(shape):
            products = window_products(session, window, names)
            for name, path in files.items():
                if name not in slabs:
                    slabs[name] = SlabFile(path, session.fixed, products[name])
                slabs[name].write(window.lo[0], sitk.GetArrayViewFromImage(products[name]))
            if jacobian is not None:
                jacobian[window.slices] = sitk.GetArrayViewFromImage(products["jacobian"])
            del products
        paths = {name: slab.commit() for name, slab in slabs.items()}
    except BaseException:
        for slab in slabs.values():  # those not yet committed: their previous file stays
            slab.discard()
        raise
    if jacobian is None:
        image = sitk.ReadImage(str(paths["jacobian"]))
    else:
        image = sitk.GetImageFromArray(jacobian)
        del jacobian
    image.CopyInformation(session.fixed)  # the fixed image's exact geometry, not the header's float32 one
    return paths, image


def _slabs(shape: tuple[int, int, int]):
    """The fixed grid's slabs of whole z slices, ~WHOLE_SLAB_VOXELS each, in order."""
    rows = max(1, WHOLE_SLAB_VOXELS // (shape[1] * shape[2]))
    for start in range(0, shape[0], rows):
        yield VoxelBox((start, 0, 0), (min(start + rows, shape[0]), shape[1], shape[2]))


def _crop(image: sitk.Image, slices: tuple[slice, slice, slice]) -> sitk.Image:
    """The (z, y, x) ``slices`` of an image, with their geometry (SimpleITK slices x, y, z)."""
    return image[tuple(slices[::-1])]


def write_patch(images: dict[str, sitk.Image], folder: Path, prefix: str = "") -> dict[str, Path]:
    """Each window image as ``<folder>/<prefix><name>.nrrd`` (atomically); returns name -> path."""
    return {
        name: write_image(image, folder / f"{prefix}{name}{PATCH_SUFFIX}", compress=False)
        for name, image in images.items()
    }
