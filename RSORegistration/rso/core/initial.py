"""The initial transform T0 a registration starts from, its composition with the session's field, the
inverse field and the ITK transform file that carries both.

Conventions (docs/architecture.md §3): every transform here maps fixed points to moving points (LPS mm),
as ITK, ANTs, elastix and Slicer's resampling write them. T0 comes from a file (``read_initial_transform``)
or from a rigid pre-alignment (``rso.core.prealign``). The session registers the fixed image against the
moving image resampled through T0 (``aligned_moving``), so the session's field u maps fixed points into
T0's frame; every exported result is the composition x -> T0(x + u(x)) (``composed_field``), and the
warped image is the ORIGINAL moving image resampled through it (one interpolation, not two).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rso.core.body import BODY_HU  # the inverse's residual is measured in the body, air holes filled
from rso.core.geometry import AIR_HU
from rso.core.imageio import check_scalar_volume, read_displacement_field, read_transform_file
from rso.errors import InputError

log = logging.getLogger(__name__)

INITIAL_TRANSFORM = "initial_transform"  # its name among a session's inputs (session/initial_transform.h5)
FIELD_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")  # a displacement field image
# The aligned moving image covers the fixed image's box plus this margin: x + u(x) leaves the box near
# its faces (the diaphragm moves 10-20 mm), and native RSO's windows reach past the box.
ALIGNED_MARGIN_MM = 20.0
MIN_COVERAGE = 0.01  # the share of the fixed image's box the moving image must cover through T0
INVERSE_ITERATIONS = 20  # ITK's fixed-point inversion: a smooth field's round trip is then within 1e-4 mm
INVERSE_MEAN_TOLERANCE = 1e-4  # ITK stops early below either tolerance: the defaults stop too soon
INVERSE_MAX_TOLERANCE = 1e-2
MAX_RESIDUAL_VOXELS = 0.5  # a mean round-trip residual above this (in the body) is worth a warning


# ----------------------------------------------------------------------------------- reading, checking
def read_initial_transform(path: str | os.PathLike) -> sitk.Transform:
    """An ITK transform file (.tfm, .txt, .h5, .mat) or a displacement field image, checked: 3-D, and
    linear (Euler, similarity, affine, ...), a displacement field, or a composite of those."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"initial transform not found: {path}")
    if path.name.lower().endswith(FIELD_IMAGE_SUFFIXES):
        return sitk.DisplacementFieldTransform(read_displacement_field(path, "initial transform"))
    transform = read_transform_file(path, "initial transform")
    check_initial_transform(transform, path.name)
    return transform


def check_initial_transform(transform: sitk.Transform, what: str) -> None:
    """A one-line InputError unless every part is 3-D and linear and invertible, or a displacement field."""
    if transform.GetDimension() != 3:
        raise InputError(
            f"initial transform {what} is {transform.GetDimension()}-D; a 3-D transform is required"
        )
    for part in parts(transform):
        if part.GetTransformEnum() == sitk.sitkDisplacementField:
            continue
        if not part.IsLinear():
            raise InputError(
                f"initial transform {what} holds a {part.GetName()}: give a linear (Euler, similarity, "
                "affine) or a displacement field transform"
            )
        if abs(np.linalg.det(affine_of(part)[0])) < 1e-6:
            raise InputError(f"initial transform {what} holds a {part.GetName()} that cannot be inverted")


def parts(transform: sitk.Transform) -> list[sitk.Transform]:
    """A transform's parts, nested composites flattened, in ITK's order: T(x) = P0(P1(... Pn-1(x)))."""
    transform = transform.Downcast()
    if transform.GetTransformEnum() != sitk.sitkComposite:
        return [transform]
    return [p for i in range(transform.GetNumberOfTransforms()) for p in parts(transform.GetNthTransform(i))]


def affine_of(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """A linear transform as y = A x + b: A (3, 3), b (3,) LPS mm."""
    b = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    columns = [np.array(transform.TransformPoint(tuple(map(float, e)))) - b for e in np.eye(3)]
    return np.stack(columns, axis=1), b


def describe(transform: sitk.Transform | None) -> dict | None:
    """The report's summary of T0: its parts; each linear one as y = matrix x + offset (LPS mm) with its
    rotation angle (degrees) and its parameters as its file has them."""
    if transform is None:
        return None
    described = []
    for part in parts(transform):
        entry = {"kind": part.GetName()}
        if part.IsLinear():
            matrix, offset = affine_of(part)
            # The angle of a rotation from its trace (a rough one for an affine that also scales or shears).
            cos = np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0)
            entry |= {"matrix": matrix.round(6).tolist(), "offset_mm": offset.round(4).tolist()}
            entry["rotation_deg"] = round(math.degrees(math.acos(cos)), 4)
            entry["parameters"] = part.GetParameters()
        entry["fixed_parameters"] = part.GetFixedParameters()  # a field's: its grid's size, origin, ...
        described.append(entry)
    return {"parts": described}


# --------------------------------------------------------------------------------- the aligned image
def aligned_moving(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform) -> sitk.Image:
    """The moving image resampled through T0 (HU, float32) on the fixed image's grid widened by
    ALIGNED_MARGIN_MM on every side: the image the session registers the fixed one against."""
    check_scalar_volume(moving, "moving image")
    inside = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(moving)
    covered = sitk.Resample(inside, fixed, initial, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if float(sitk.GetArrayViewFromImage(covered).mean()) < MIN_COVERAGE:
        raise InputError(
            "the moving image resampled through the initial transform does not overlap the fixed image "
            "(an ITK transform maps fixed points to moving points: check its direction)"
        )
    reference = widened(fixed, ALIGNED_MARGIN_MM)
    return sitk.Resample(moving, reference, initial, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def widened(image: sitk.Image, margin_mm: float) -> sitk.Image:
    """An empty float32 image on ``image``'s grid with ``margin_mm`` more on every side."""
    spacing = np.array(image.GetSpacing())
    pad = np.ceil(margin_mm / spacing).astype(int)
    reference = sitk.Image([int(n) for n in np.array(image.GetSize()) + 2 * pad], sitk.sitkFloat32)
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(image.GetDirection())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    reference.SetOrigin((np.array(image.GetOrigin()) - direction @ (pad * spacing)).tolist())
    return reference


def truth_after_initial(truth: sitk.Image, initial: sitk.Transform | None) -> sitk.Image:
    """A truth field t (fixed -> moving) seen from the aligned moving image: x -> T0^-1(x + t(x)) - x on
    the truth's grid (LPS mm), so that it compares with the session's field u."""
    if initial is None:
        return truth
    composite = sitk.CompositeTransform([inverse_transform(initial), _field_transform(truth)])
    return sampled(composite, truth)


# -------------------------------------------------------------------------------- composing, inverting
def composed_field(field: sitk.Image, initial: sitk.Transform | None) -> sitk.Image:
    """x -> T0(x + u(x)) - x on ``field``'s grid: the field the results export (LPS mm, fixed -> moving)."""
    if initial is None:
        return field
    return sampled(sitk.CompositeTransform([initial, _field_transform(field)]), field)


def export_transform(field: sitk.Image, initial: sitk.Transform | None) -> sitk.Transform:
    """One ITK transform equal to ``composed_field``: the field u alone, or a flat composite that
    applies u first and then T0's parts (SimpleITK, ANTs and Slicer read either from a .h5 file)."""
    deformable = _field_transform(field)
    if initial is None:
        return deformable
    return sitk.CompositeTransform([*parts(initial), deformable])


def inverse_transform(transform: sitk.Transform) -> sitk.Transform:
    """T^-1 (moving -> fixed points): linear parts inverted exactly, displacement fields iteratively."""
    inverted = [_inverse_part(part) for part in reversed(parts(transform))]
    return sitk.CompositeTransform(inverted) if inverted else sitk.Transform()


def _inverse_part(part: sitk.Transform) -> sitk.Transform:
    if part.GetTransformEnum() == sitk.sitkDisplacementField:
        return _field_transform(invert_field(part.GetDisplacementField()))
    return part.GetInverse()


def invert_field(field: sitk.Image) -> sitk.Image:
    """The inverse of x -> x + u(x) on the field's own grid (ITK's fixed-point iteration), LPS mm."""
    inverter = sitk.InvertDisplacementFieldImageFilter()
    inverter.SetMaximumNumberOfIterations(INVERSE_ITERATIONS)
    inverter.SetMeanErrorToleranceThreshold(INVERSE_MEAN_TOLERANCE)
    inverter.SetMaxErrorToleranceThreshold(INVERSE_MAX_TOLERANCE)
    inverter.SetEnforceBoundaryCondition(False)  # the field need not vanish at the box's faces
    return inverter.Execute(sitk.Cast(field, sitk.sitkVectorFloat64))


def inverse_field(field: sitk.Image, initial: sitk.Transform | None, moving: sitk.Image) -> sitk.Image:
    """The moving -> fixed field on the moving image's grid: y -> v(T0^-1(y)), v the inverse of
    x -> x + u(x) (LPS mm). ``field``: u, on the fixed image's grid."""
    inverse = _field_transform(invert_field(field))
    if initial is not None:
        inverse = sitk.CompositeTransform([inverse, inverse_transform(initial)])
    return sampled(inverse, moving)


def round_trip_residual(forward: sitk.Image, inverse: sitk.Image, fixed: sitk.Image) -> dict:
    """|F^-1(F(x)) - x| in the body (fixed > BODY_HU, holes filled per slice) where F(x) lies in the
    inverse's grid: mean, 95th percentile and max (mm), and the mean in fixed voxels (the mean spacing)."""
    round_trip = sampled(
        sitk.CompositeTransform([_field_transform(inverse), _field_transform(forward)]), fixed
    )
    residual = np.linalg.norm(sitk.GetArrayViewFromImage(round_trip), axis=-1)
    region = body_region(fixed) & _lands_in(forward, inverse)
    if not region.any():
        return {"mean_mm": None, "p95_mm": None, "max_mm": None, "mean_voxels": None, "voxels": 0}
    values = residual[region]
    mean_voxels = float(values.mean()) / float(np.mean(fixed.GetSpacing()))
    if mean_voxels > MAX_RESIDUAL_VOXELS:
        log.warning(
            "the inverse field's round trip misses by %.2f voxels on average in the body", mean_voxels
        )
    return {
        "mean_mm": round(float(values.mean()), 4),
        "p95_mm": round(float(np.percentile(values, 95)), 4),
        "max_mm": round(float(values.max()), 4),
        "mean_voxels": round(mean_voxels, 4),
        "voxels": int(region.sum()),
    }


def body_region(fixed: sitk.Image) -> np.ndarray:
    """(z, y, x) bool: above BODY_HU, with the air inside (lungs, airways) filled slice by slice."""
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(sitk.GetArrayViewFromImage(fixed) > BODY_HU, structure=in_plane)


def _lands_in(forward: sitk.Image, target: sitk.Image) -> np.ndarray:
    """(z, y, x) bool on the forward field's grid: where x + F(x) falls inside ``target``'s grid."""
    inside = sitk.Image(target.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(target)
    landed = sitk.Resample(inside, forward, _field_transform(forward), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayViewFromImage(landed) > 0


def sampled(transform: sitk.Transform, grid: sitk.Image) -> sitk.Image:
    """A transform as a displacement field on ``grid``'s voxels (LPS mm, float64)."""
    return sitk.TransformToDisplacementField(
        transform,
        sitk.sitkVectorFloat64,
        grid.GetSize(),
        grid.GetOrigin(),
        grid.GetSpacing(),
        grid.GetDirection(),
    )


def _field_transform(field: sitk.Image) -> sitk.DisplacementFieldTransform:
    # The transform takes the image's buffer: give it a copy, so that the caller's field stays whole.
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


# ------------------------------------------------------------------------------------------- writing
def write_transform(transform: sitk.Transform, path: str | os.PathLike) -> Path:
    """Write an ITK transform file atomically (the format follows the suffix: .tfm, .txt, .h5, .mat)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}-") as folder:
        tmp = Path(folder) / path.name
        sitk.WriteTransform(transform, str(tmp))
        os.replace(tmp, path)
    return path
