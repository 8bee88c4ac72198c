"""The session's field and the warped image on the fixed image's own grid (native resolution).

The coarse field lives on the model grid; it is upsampled linearly to the fixed grid (or a window of
it) and the fine patches of native RSO are added at the native voxels themselves. At 1 mm a whole
field is 12 bytes a voxel, so the functions here make at most two such fields at once, and
rso.core.overlay builds whole images from windows of it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import AIR_HU, ModelGrid, upsample_field
from rso.core.initial import composed_field
from rso.core.patches import add_patches

HU_RANGE = (-32768, 32767)  # CT images are written as whole HU (int16): a quarter of float64's bytes


def native_field(session, index: int | None = None, initial: bool = True) -> sitk.Image:
    """The session's field on the fixed image's own grid (LPS mm, fixed -> moving).

    The coarse field is interpolated from the model grid; fine patches (native RSO) are added at
    the native voxels themselves, so their detail is not lost to the model grid. ``index``: the
    field after that step (0: before any step); None: the current one. With an initial transform
    T0 the field is composed with it, x -> T0(x + u(x)), unless ``initial`` is False (u alone).
    """
    state = session.state if index is None else session.state_at(index)
    field = on_fixed_grid(session, state.field, state.patches)
    return composed_field(field, session.pair.initial_transform) if initial else field


def last_step_change_mm(session) -> sitk.Image:
    """|u_after - u_before| (mm, float32) of the last step on the fixed image's grid.

    Built one component at a time, so that no (z, y, x, 3) field of the whole image is made (at 1 mm
    each costs 12 bytes a voxel). Upsampling is linear, so the coarse fields' difference is upsampled
    once per component (not at all after a native step, whose coarse field did not change); the fine
    patches of the state after are added and those of the state before subtracted.
    """
    before, after = session.state_at(len(session.history) - 1), session.state
    kept = len(before.patches)
    same_patches = (
        all(a is b for a, b in zip(after.patches[:kept], before.patches)) and len(after.patches) >= kept
    )
    grid = ModelGrid.of_image(session.fixed)
    if same_patches and np.array_equal(after.field, before.field):
        coarse, signed = None, [(+1, p.on_grid(grid)) for p in after.patches[kept:]]
    else:
        coarse = session.grid.voxels_to_mm(after.field - before.field)
        signed = [(+1, p.on_grid(grid)) for p in after.patches] + [
            (-1, p.on_grid(grid)) for p in before.patches
        ]
    squared = np.zeros(grid.shape, np.float32)
    for component in range(3):
        values = _coarse_component(session, coarse, component, grid.shape)
        for sign, (slices, patch) in signed:
            values[slices] += sign * patch[..., component]
        squared += np.square(values, out=values)
    image = sitk.GetImageFromArray(np.sqrt(squared, out=squared))
    image.CopyInformation(session.fixed)
    return image


def _coarse_component(session, coarse_mm: np.ndarray | None, component: int, shape) -> np.ndarray:
    """One LPS component of a (z, y, x, 3) model-grid field upsampled linearly to the fixed grid (zeros
    for None): (z, y, x) float32, writable."""
    if coarse_mm is None:
        return np.zeros(shape, np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(coarse_mm[..., component], np.float64))
    image.SetSpacing(session.grid.spacing)
    image.SetOrigin(session.grid.origin)
    image.SetDirection(session.grid.direction)
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(session.fixed)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetUseNearestNeighborExtrapolator(True)  # as upsample_field: the edge value beyond the grid
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def patches_on_fixed_grid(session, patches, reference: sitk.Image | None = None) -> sitk.Image:
    """Only ``patches`` on the fixed grid or a window of it (``reference``), zero elsewhere, LPS mm: each
    is added on its own slices."""
    reference = session.fixed if reference is None else reference
    grid = ModelGrid.of_image(reference)
    field = sitk.GetImageFromArray(add_patches(np.zeros((*grid.shape, 3), np.float32), grid, patches), True)
    field.CopyInformation(reference)
    return field


def on_fixed_grid(
    session, field_voxels: np.ndarray, patches=(), reference: sitk.Image | None = None
) -> sitk.Image:
    """A (3, z, y, x) model-grid field upsampled to the fixed grid (or ``reference``, a window of it),
    plus ``patches``: (z, y, x, 3) LPS mm, float32 (12 bytes a voxel; at most two such fields at once)."""
    reference = session.fixed if reference is None else reference
    model_field = session.grid.field_image(session.grid.voxels_to_mm(field_voxels))
    coarse = upsample_field(model_field, reference, sitk.sitkVectorFloat32)
    if not patches:
        return coarse
    total = sitk.GetArrayFromImage(coarse)  # a writable copy; the image goes before the next one is made
    del coarse
    add_patches(total, ModelGrid.of_image(reference), patches, copy=False)
    field = sitk.GetImageFromArray(total, isVector=True)
    field.CopyInformation(reference)
    return field


def warp_native(moving: sitk.Image, field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The moving image resampled on ``reference``'s grid through a displacement field on that grid, as
    float32 (ITK's WarpImageFilter: the field as it is, float32 or float64, with no float64 copy)."""
    if moving.GetPixelID() != sitk.sitkFloat32:  # a cast copies the whole image, even to its own type
        moving = sitk.Cast(moving, sitk.sitkFloat32)
    return sitk.Warp(
        moving,
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


def is_ct(session) -> bool:
    """Both images are CT in HU (neither was normalised as a non-CT image)."""
    return session.pair.normalisation.moving is None and session.pair.normalisation.fixed is None


def stored_image(image: sitk.Image, ct: bool) -> sitk.Image:
    """A CT image as whole HU (int16); any other image as it is (float32)."""
    if not ct:
        return image
    values = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), *HU_RANGE).astype(np.int16)
    stored = sitk.GetImageFromArray(values)
    stored.CopyInformation(image)
    return stored
