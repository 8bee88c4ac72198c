"""Reading and writing images and displacement fields with SimpleITK, with full geometry.

Everything here is LPS (ITK's convention). Inputs are checked once, at the door, so that the
rest of the engine can trust them.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import secrets
import stat
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.dicom import read_series
from rso.errors import InputError
from rso.options import ALLOW_NON_CT

log = logging.getLogger(__name__)

NIFTI_INTENT_DISPLACEMENT_VECTOR = 1006
NON_CT_BELOW_HU = -200.0  # CT of a body has voxels below this (air, lung, fat); 0-255 or MR images do not


def read_image(path: str | os.PathLike, what: str = "image", series: str | None = None) -> sitk.Image:
    """Read a 3-D scalar image (NIfTI, NRRD, MHA or a DICOM series folder) as float32 HU.

    ``series``: which series of a DICOM folder (its series instance UID, or its index in
    ``rso.core.dicom.list_series`` as text); needed when the folder holds several.
    """
    return sitk.Cast(read_scalar_image(path, what, series), sitk.sitkFloat32)


def read_scalar_image(path: str | os.PathLike, what: str = "image", series: str | None = None) -> sitk.Image:
    """``read_image``, checked alike, in the file's own pixel type (an int16 CT stays int16: half the
    memory of float32), for a viewer that shows it as it is."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if series is not None and not path.is_dir():
        raise InputError(f"{what} {path} is a file: a DICOM series ({series}) is picked in a folder only")
    if path.name.endswith(".gz"):
        _check_complete_gzip(path, what)
    try:
        image = read_series(path, what, series) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{what} could not be read ({path}): {_first_line(exc)}") from None
    check_scalar_volume(image, f"{what} {path.name}")
    return image


def _check_complete_gzip(path: Path, what: str) -> None:
    """ITK reads a truncated .nii.gz without a word, zeros where the data ended: decompress it once to be
    sure."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(
            f"{what} could not be read ({path}): the compressed file is truncated or corrupt ({exc})"
        ) from None


def check_scalar_volume(image: sitk.Image, what: str) -> None:
    """A registrable volume is 3-D, scalar, at least 2 voxels along each axis, and finite."""
    if image.GetDimension() != 3:
        raise InputError(f"{what} is {image.GetDimension()}-D; a 3-D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a scalar volume is required"
        )
    if min(image.GetSize()) < 2:
        raise InputError(
            f"{what} has size {image.GetSize()}; a 3-D volume needs at least 2 voxels along each axis"
        )
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{what} has {bad} NaN or infinite voxels")
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise InputError(
            f"{what} is constant (every voxel is {low:g}): an image without contrast cannot be registered"
        )


def check_ct_intensities(image: sitk.Image, what: str, allow_non_ct: bool = ALLOW_NON_CT) -> bool:
    """The model is trained on CT in Hounsfield units: refuse an image that does not look like it.

    CT of a body holds air (-1000 HU), lung (about -800) or fat (about -100): something below
    NON_CT_BELOW_HU. An 8-bit 0-255 volume, MR, or CT stored without its rescale has nothing
    there. ``allow_non_ct`` registers such an image on purpose, with a warning in the log.
    Returns whether the image looks like CT (False only where ``allow_non_ct`` let it through).
    """
    values = sitk.GetArrayViewFromImage(image)
    low = float(values.min())
    if low < NON_CT_BELOW_HU:
        return True
    message = (
        f"{what} does not look like CT in Hounsfield units (values {low:g} to {float(values.max()):g}, "
        f"nothing below {NON_CT_BELOW_HU:g}; air is -1000 HU): the model expects HU"
    )
    if not allow_non_ct:
        raise InputError(
            f"{message}; rescale it to HU, or allow non-CT intensities (--allow-non-ct) to register it anyway"
        )
    log.warning("%s; registering it anyway, as asked", message)
    return False


def read_file(path: str | os.PathLike, what: str) -> sitk.Image:
    """An image file as ITK reads it (any pixel type, header kept), or a one-line InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{what} could not be read ({path}): {_first_line(exc)}") from None


# What sitk.ReadTransform reads, by suffix: ITK text, HDF5, MATLAB (ANTs) and MINC transform files.
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat", ".xfm")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_transform_file(path: str | os.PathLike, what: str) -> sitk.Transform:
    """An ITK transform file, or a one-line InputError.

    The suffix and an HDF5 file's signature are checked first: ITK's HDF5 probe of a file that is not
    one prints a page of diagnostics to stderr before it fails.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    if not path.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(f"{what} {path.name}: not an ITK transform file ({', '.join(TRANSFORM_SUFFIXES)})")
    if path.suffix.lower() in (".h5", ".hdf5"):
        with path.open("rb") as stream:
            if stream.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                raise InputError(f"{what} {path.name}: not an HDF5 file")
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputError(f"{what} could not be read ({path}): {_first_line(exc)}") from None


def read_displacement_field(
    path: str | os.PathLike, what: str = "displacement field", pixel=sitk.sitkVectorFloat64
) -> sitk.Image:
    """Read an ITK displacement field (3 components, LPS mm, fixed -> moving) as ``pixel``: float64 for a
    field that becomes a transform (ITK's DisplacementFieldTransform holds doubles), float32 for one only
    compared or resampled (a truth at 1 mm: 0.6 GB instead of 1.2; its readers cast where they need to)."""
    path = Path(path)
    field = read_file(path, what)
    if field.GetDimension() != 3 or field.GetNumberOfComponentsPerPixel() != 3:
        raise InputError(f"{what} {path.name} is not a 3-D field with 3 components per voxel")
    if not np.isfinite(sitk.GetArrayViewFromImage(field)).all():
        raise InputError(f"{what} {path.name} has NaN or infinite values")
    return sitk.Cast(field, pixel)


def read_truth_field(path: str | os.PathLike, what: str = "truth field") -> sitk.Image:
    """A ground-truth field in float32: it is only compared and resampled, never a transform (at 1 mm a
    float64 copy held for the whole session would take 1.2 GB)."""
    return read_displacement_field(path, what, sitk.sitkVectorFloat32)


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write atomically: a reader never sees a half-written file, a failure leaves none. ``compress``:
    gzip where the format has it (a small window written for a viewer is faster without)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".nii.gz"
    fd, tmp = new_file(path.parent, f".{path.stem.split('.')[0]}-", suffix)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=compress)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_displacement_field(field: sitk.Image, path: str | os.PathLike) -> Path:
    """Write an ITK displacement field (LPS mm, fixed -> moving) that ITK and Slicer read as a transform.

    NIfTI gets intent code 1006 (displacement vector), which by the NIfTI/ITK convention stores the
    vectors in RAS; ITK converts them back to LPS on reading. SimpleITK cannot write that intent
    for its vector images, so NIfTI goes through nibabel; other formats go through SimpleITK.
    """
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        return write_image(sitk.Cast(field, sitk.sitkVectorFloat32), path)
    # One float32 copy of the field (12 bytes a voxel); the sign flip is written into it.
    return write_displacement_array(np.array(sitk.GetArrayViewFromImage(field), np.float32), field, path)


def write_displacement_array(vectors: np.ndarray, reference: sitk.Image, path: str | os.PathLike) -> Path:
    """``write_displacement_field`` for NIfTI from a (z, y, x, 3) float32 array of LPS mm on ``reference``'s
    grid, with no copy of it: the array itself is turned to RAS (its first two components negated) and
    nibabel streams a transposed view of it to the file."""
    import nibabel  # only needed for this one header field

    path = Path(path)
    vectors[..., :2] *= -1
    vectors_ras = vectors.transpose(2, 1, 0, 3)
    affine = LPS_TO_RAS_4x4 @ index_to_physical_matrix(reference)
    nifti = nibabel.Nifti1Image(vectors_ras[:, :, :, None, :], affine)
    nifti.header.set_intent(NIFTI_INTENT_DISPLACEMENT_VECTOR)
    nifti.header.set_xyzt_units("mm")
    nifti.header.set_qform(affine, code=1)
    nifti.header.set_sform(affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_file(path.parent, f".{path.stem.split('.')[0]}-", suffix)
    os.close(fd)
    try:
        nifti.to_filename(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


LPS_TO_RAS_4x4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def index_to_physical_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 matrix taking an ITK (i, j, k, 1) index to an LPS point."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def write_bytes_atomically(data: bytes, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_file(path.parent, f".{path.name}-", "")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file with an unused name in ``folder``, open for writing: (descriptor, path).

    Unlike mkstemp's (0600), its mode is an ordinary new file's, 0o666 less the umask, which the
    kernel applies: the umask is never read, since os.umask can read it only by changing it for
    every thread of the process meanwhile.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, flags, 0o666), str(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name in {folder}")


def current_umask(status_file: str = "/proc/self/status") -> int:
    """The process's umask, read without changing it: /proc/self/status (Linux), else a probe's mode."""
    try:
        for line in Path(status_file).read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.mkdir(0o777)  # a folder: its mode shows the umask's execute bits too
        return 0o777 & ~stat.S_IMODE(probe.stat().st_mode)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages end with the useful sentence; the first lines, and its object's address, are noise.
    return re.sub(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ", "", lines[-1]) if lines else type(exc).__name__
