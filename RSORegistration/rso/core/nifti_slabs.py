"""Uncompressed NIfTI files written a slab of slices at a time, so that a whole image is never held.

The viewer's whole images (rso.service.viewer_files, rso.core.overlay.write_whole_products) are
rewritten after every whole-image step; held whole at once, the warped, difference, displacement and
det J images of a 1 mm CT take about 1 GB. A ``SlabFile`` takes each slab as it is computed and writes
it to its place in the file, and puts the file in place atomically once every slab is in it.

The header is the one the file's usual writer gives it, written by that writer: SimpleITK's for an
image, ``imageio.write_displacement_array``'s (nibabel, intent 1006, RAS vectors) for a displacement
field. It writes an image of the same geometry and pixel type of 2 x 2 x 2 voxels, and only its size
(dim[1..3]) is changed; nothing else in either header depends on the size. The file is then byte for
byte the one the writer makes of the whole image. The data are written with plain file writes, not a
memory map, whose written pages would count in the process's resident memory until it is unmapped.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.imageio import new_file, write_displacement_array

NIFTI1_HEADER_BYTES = 348
NIFTI1_MAX_SIZE = 32767  # dim[] is int16: a larger image needs NIfTI-2, written whole by its writer
_DIM_OFFSET = 40  # int16 dim[8]: dim[0] the rank, then the size x, y, z, ...
_VOX_OFFSET = 108  # float32: where the data start


def streamable(reference: sitk.Image) -> bool:
    """Whether an image on ``reference``'s grid fits a NIfTI-1 file (each size <= 32767)."""
    return reference.GetDimension() == 3 and max(reference.GetSize()) <= NIFTI1_MAX_SIZE


class SlabFile:
    """An uncompressed ``.nii`` file of an image on ``reference``'s grid (3-D), of ``like``'s pixel type:
    scalar as SimpleITK writes it, or a (z, y, x, 3) displacement field (LPS mm) as
    ``write_displacement_array`` writes it (RAS vectors, component planes). Slabs of whole z slices
    go in with ``write``; ``commit`` puts the file at ``path`` atomically, ``discard`` removes it (the
    file at ``path`` is then the one before)."""

    def __init__(self, path: str | os.PathLike, reference: sitk.Image, like: sitk.Image):
        self.path = Path(path)
        if not self.path.name.endswith(".nii"):
            raise ValueError(f"{self.path.name}: a slab file is an uncompressed .nii file")
        if not streamable(reference):
            raise ValueError(f"size {reference.GetSize()} does not fit a NIfTI-1 header")
        self.vectors = like.GetNumberOfComponentsPerPixel() == 3
        self.shape = tuple(reference.GetSize()[::-1])  # (z, y, x)
        self._rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = new_file(self.path.parent, f".{self.path.stem.split('.')[0]}-", ".nii")
        os.close(fd)
        self._file = None
        try:
            self._write_template(reference, like)
            self._file = open(self._tmp, "r+b")  # noqa: SIM115 (closed by commit or discard)
            self._write_header()
        except BaseException:
            self.discard()
            raise

    def _write_template(self, reference: sitk.Image, like: sitk.Image) -> None:
        """The writer's own file of a 2 x 2 x 2 image with ``reference``'s geometry, at the temporary path."""
        values = sitk.GetArrayViewFromImage(like)
        self._dtype = values.dtype
        if self.vectors:
            template = sitk.Image([2, 2, 2], sitk.sitkUInt8)  # only its geometry is read
            _copy_geometry(template, reference)
            write_displacement_array(np.zeros((2, 2, 2, 3), values.dtype), template, self._tmp)
        else:
            template = sitk.Image([2, 2, 2], like.GetPixelID())
            _copy_geometry(template, reference)
            sitk.WriteImage(template, self._tmp, useCompression=False)

    def _write_header(self) -> None:
        """The template's header with the whole size, and the file grown to the whole data's length."""
        header = bytearray(self._file.read(NIFTI1_HEADER_BYTES))
        endian = "<" if struct.unpack_from("<i", header)[0] == NIFTI1_HEADER_BYTES else ">"
        if struct.unpack_from(f"{endian}i", header)[0] != NIFTI1_HEADER_BYTES:
            raise ValueError(f"{self._tmp}: the writer did not write a NIfTI-1 header")
        rank = struct.unpack_from(f"{endian}h", header, _DIM_OFFSET)[0]
        if rank != (5 if self.vectors else 3):
            raise ValueError(f"{self._tmp}: a {rank}-D NIfTI header, not the expected layout")
        struct.pack_into(f"{endian}3h", header, _DIM_OFFSET + 2, *self.shape[::-1])  # x, y, z
        self._offset = int(struct.unpack_from(f"{endian}f", header, _VOX_OFFSET)[0])
        self._dtype = self._dtype.newbyteorder(endian)
        voxels = int(np.prod(self.shape)) * (3 if self.vectors else 1)
        self._file.seek(0)
        self._file.write(header)
        self._file.truncate(self._offset + voxels * self._dtype.itemsize)

    def write(self, start: int, values: np.ndarray) -> None:
        """Slices ``start``, ``start + 1``, ... (z) of the image: (rows, y, x) or (rows, y, x, 3) LPS mm."""
        rows = values.shape[0]
        expected = (rows, *self.shape[1:], *((3,) if self.vectors else ()))
        if values.shape != expected or not 0 <= start <= self.shape[0] - rows:
            raise ValueError(f"a slab of shape {values.shape} at slice {start} of a {self.shape} image")
        plane = self.shape[1] * self.shape[2]  # voxels in one z slice
        if not self.vectors:
            self._write_at(start * plane, np.ascontiguousarray(values, self._dtype))
        else:  # NIfTI (x, y, z, 1, 3): one plane per component, RAS (LPS x and y negated)
            for component, sign in enumerate((-1, -1, 1)):
                values_c = values[..., component]
                plane_c = np.negative(values_c, dtype=self._dtype) if sign < 0 else values_c
                at = (component * self.shape[0] + start) * plane
                self._write_at(at, np.ascontiguousarray(plane_c, self._dtype))
        self._rows += rows

    def _write_at(self, voxel: int, values: np.ndarray) -> None:
        self._file.seek(self._offset + voxel * self._dtype.itemsize)
        self._file.write(values.data)

    def commit(self) -> Path:
        """The file at ``path`` (os.replace), once every slice was written."""
        if self._rows != self.shape[0]:
            raise ValueError(f"{self._rows} of {self.shape[0]} slices written to {self.path.name}")
        try:
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._file = None
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (nothing happens to the file at ``path``)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        Path(self._tmp).unlink(missing_ok=True)


def _copy_geometry(image: sitk.Image, reference: sitk.Image) -> None:
    image.SetOrigin(reference.GetOrigin())
    image.SetSpacing(reference.GetSpacing())
    image.SetDirection(reference.GetDirection())
