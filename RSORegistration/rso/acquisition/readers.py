"""A scanner's projections, read through RTK's ``ProjectionsReader`` as line integrals.

RTK picks the reader from the file: Elekta ``.his`` (16-bit raw: cropped by 4 pixels on each side, then
``-log`` against I0 = 65536 through its lookup tables), Varian OBI ``.hnd`` / ``.hnc`` and TrueBeam
``.xim`` (32-bit raw, compressed: ``log(139000 / I)``), or any image ITK reads (an MHA stack of line
integrals is read as it is). RTK itself is imported lazily: its first import costs ~20 s.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rso.errors import InputError

log = logging.getLogger(__name__)

# Files that sit beside projections and are never projections themselves.
NOT_PROJECTIONS = (".xml", ".dbf", ".txt", ".json", ".ini", ".csv", ".raw", ".zraw", ".log", ".py")
VENDOR_KINDS = {".his": "elekta-his", ".hnd": "varian-hnd", ".hnc": "varian-hnd", ".xim": "varian-xim"}


def rtk_module():
    """RTK's Python module (``itk.RTK``), imported on first use."""
    from itk import RTK as rtk

    return rtk


@dataclass(frozen=True)
class Projections:
    """A projection stack read by RTK.

    ``line_integrals``: float32 (P, V, U), dimensionless (mu times path length). ``spacing_mm`` (u, v)
    and ``origin_mm`` (u, v) of the first pixel, in RTK's detector frame (mm at the detector).
    ``kind``: "elekta-his", "varian-hnd", "varian-xim" or "image"; ``files``: the files read, in order.
    """

    files: tuple[Path, ...]
    kind: str
    line_integrals: np.ndarray
    spacing_mm: tuple[float, float]
    origin_mm: tuple[float, float]

    @property
    def count(self) -> int:
        return int(self.line_integrals.shape[0])

    def detector(self):
        """The stack's detector as ``rso.core.projection.Detector`` (size (u, v) px, spacing, origin)."""
        from rso.core.projection import Detector

        views, rows, columns = self.line_integrals.shape
        return Detector(size_px=(columns, rows), spacing_mm=self.spacing_mm, origin_mm=self.origin_mm)

    def summary(self) -> dict:
        views, rows, columns = self.line_integrals.shape
        return {
            "kind": self.kind,
            "files": len(self.files),
            "count": views,
            "size_px": [columns, rows],
            "spacing_mm": [round(s, 6) for s in self.spacing_mm],
        }


def natural_key(path: Path) -> list:
    """Sort key comparing the digits in names as numbers (Proj_9 before Proj_10)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def projection_files(source: str | Path, regexp: str | None = None) -> tuple[Path, ...]:
    """The projection files of ``source`` (a file, or a folder of files of one format), in natural order.

    In a folder, the files RTK can read are kept (names matching ``regexp`` only, when given); a folder
    holding two formats is ambiguous. Files RTK cannot read (an empty TrueBeam .xim, for one) are skipped.
    """
    source = Path(source)
    if source.is_file():
        _check_readable(source)
        return (source,)
    if not source.is_dir():
        raise InputError(f"projections not found: {source}")
    pattern = re.compile(regexp) if regexp else None
    candidates = [
        path
        for path in sorted(source.iterdir(), key=natural_key)
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() not in NOT_PROJECTIONS
        and (pattern is None or pattern.search(path.name))
    ]
    readable = [path for path in candidates if _image_io(path) is not None]
    suffixes = sorted({_suffix(path) for path in readable})
    if not readable:
        seen = ", ".join(sorted({_suffix(path) or "(none)" for path in candidates})) or "none"
        raise InputError(f"no projections RTK can read in {source} (file extensions there: {seen})")
    if len(suffixes) > 1:
        raise InputError(
            f"projections in {source} are ambiguous: several formats ({', '.join(suffixes)}); "
            "choose one with --regexp"
        )
    skipped = len(candidates) - len(readable)
    if skipped:
        log.info("skipped %d file(s) in %s that RTK cannot read", skipped, source)
    return tuple(readable)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _image_io(path: Path):
    """ITK's image IO for ``path`` (RTK's vendor formats included), or None."""
    import itk

    rtk_module()  # registers RTK's image IO factories with ITK
    return itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)


def _check_readable(path: Path) -> None:
    if _image_io(path) is None:
        raise InputError(
            f"unknown projection format {path.suffix or path.name!r} ({path.name}): RTK reads Elekta .his, "
            "Varian .hnd/.hnc/.xim and images ITK reads (.mha, .mhd, .nrrd, .nii, ...)"
        )


def projection_kind(files) -> str:
    """'elekta-his', 'varian-hnd', 'varian-xim' or 'image' (line integrals or raw in an ITK format)."""
    return VENDOR_KINDS.get(_suffix(Path(files[0])), "image")


def read_projections(files, binning: int = 1) -> Projections:
    """Read ``files`` (from ``projection_files``) with RTK's ``ProjectionsReader`` as line integrals.

    ``binning``: shrink factor along u and v (RTK's --binning), to bring 1024^2 panels down to size.
    """
    import itk

    rtk = rtk_module()
    files = tuple(Path(f) for f in files)
    if not files:
        raise InputError("no projection files to read")
    if binning < 1:
        raise InputError(f"--binning must be a whole number >= 1, got {binning}")
    image_type = itk.Image[itk.F, 3]
    reader = rtk.ProjectionsReader[image_type].New()
    reader.SetFileNames([str(f) for f in files])
    if binning > 1:
        reader.SetShrinkFactors([binning, binning, 1])
    try:
        reader.Update()
    except RuntimeError as error:
        raise InputError(
            f"RTK could not read the projections ({files[0].name}, ...): {itk_reason(error)}"
        ) from None
    stack = reader.GetOutput()
    region = stack.GetLargestPossibleRegion()
    # RTK crops .his files without moving the origin: the first pixel is at the region's index
    first = stack.TransformIndexToPhysicalPoint(region.GetIndex())
    array = np.ascontiguousarray(itk.GetArrayFromImage(stack), dtype=np.float32)
    if array.ndim != 3 or min(array.shape[1:]) < 2:
        raise InputError(f"projections {files[0].name}: a stack of 2-D images is required, got {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"projections {files[0].name}: RTK's line integrals are not all finite")
    spacing = stack.GetSpacing()
    projections = Projections(
        files=files,
        kind=projection_kind(files),
        line_integrals=array,
        spacing_mm=(float(spacing[0]), float(spacing[1])),
        origin_mm=(float(first[0]), float(first[1])),
    )
    log.info("read %d projections (%s, %d file(s))", projections.count, projections.kind, len(files))
    return projections


def itk_reason(error: BaseException) -> str:
    """The last non-empty line of an ITK exception (its message, without the source location)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
