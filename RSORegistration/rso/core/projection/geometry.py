"""Cone-beam projection geometry, the image's placement in RTK's frame, and RTK's geometry XML files.

RTK's fixed frame is IEC 61217's: the gantry rotates about y, and with all angles 0 the source lies on
+z (docs: RTK "3D Circular Projection Geometry"). Everything here is in mm and degrees. RTK itself is
imported lazily (its first import costs ~20 s): only `to_rtk`, `from_rtk`, `read_geometry` and
`write_geometry` need it.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.imageio import read_transform_file, write_bytes_atomically
from rso.errors import InputError

log = logging.getLogger(__name__)

PANEL_MM = (400.0, 400.0)  # flat panel (u, v) at the detector: both vendors' panels are about 40 x 40 cm
HALF_FAN_TOLERANCE_MM = 1.0  # a projection offset x beyond this is a displaced (half-fan) detector
SHORT_SCAN_GAP_DEG = 20.0  # rtkfdk's default: a largest angular gap below this is a full scan
_DECIMALS = 9  # RTK's XML keeps 15 significant digits: values are rounded to 1e-9 on the way back
_ANGLES = ("gantry_deg", "out_of_plane_deg", "in_plane_deg")
RTK_GEOMETRY_ROOT = "RTKThreeDCircularGeometry"  # the root element RTK's XML writer gives the file
# How a phase is reconstructed from its projections: "fdk" (the vendors' recipe), or "tv" (``tv_reconstruct``:
# RTK's ADMM total-variation reconstruction, ~20 times FDK's time; docs/decisions.md says why).
RECONSTRUCTIONS = ("fdk", "tv")
# Our element in a phase's geometry file: how that phase image was reconstructed from these projections
# (RTK's reader skips elements it does not know). Absent: FDK, the vendors' recipe.
PHASE_RECONSTRUCTION = "PhaseReconstruction"


def rtk_module():
    """RTK's Python module (``itk.RTK``), imported on first use."""
    from itk import RTK as rtk

    return rtk


def _floats(values, count: int | None = None) -> tuple[float, ...]:
    """A scalar (repeated ``count`` times) or a sequence as a tuple of floats."""
    array = np.atleast_1d(np.asarray(values, dtype=float))
    if array.ndim != 1:
        raise InputError(f"projection geometry: expected a sequence of numbers, got shape {array.shape}")
    if array.size == 1 and count is not None:
        array = np.repeat(array, count)
    return tuple(float(v) for v in array)


def _wrap_deg(angle: float) -> float:
    """An angle in [0, 360) degrees, as RTK stores it, rounded like every stored value."""
    wrapped = round(angle % 360.0, _DECIMALS)
    return 0.0 if wrapped >= 360.0 else wrapped + 0.0


@dataclass(frozen=True)
class ProjectionGeometry:
    """One value per projection, as RTK's ``ThreeDCircularProjectionGeometry.AddProjection`` takes them.

    Distances in mm, angles in degrees (wrapped to [0, 360) as RTK stores them). ``source_to_detector_mm``
    is 0 for a parallel beam (RTK's convention). The optional tuples default to zeros.
    """

    source_to_isocenter_mm: tuple[float, ...]
    source_to_detector_mm: tuple[float, ...]
    gantry_deg: tuple[float, ...]
    projection_offset_x_mm: tuple[float, ...] = field(default=())
    projection_offset_y_mm: tuple[float, ...] = field(default=())
    out_of_plane_deg: tuple[float, ...] = field(default=())
    in_plane_deg: tuple[float, ...] = field(default=())
    source_offset_x_mm: tuple[float, ...] = field(default=())
    source_offset_y_mm: tuple[float, ...] = field(default=())

    def __post_init__(self):
        count = len(_floats(self.gantry_deg))
        for item in fields(self):
            raw = getattr(self, item.name)
            values = _floats(0.0 if len(np.atleast_1d(raw)) == 0 else raw, count)
            values = tuple(round(v, _DECIMALS) + 0.0 for v in values)
            if item.name in _ANGLES:
                values = tuple(_wrap_deg(v) for v in values)
            object.__setattr__(self, item.name, values)
        lengths = {len(getattr(self, item.name)) for item in fields(self)}
        if count < 2 or len(lengths) != 1:
            raise InputError(
                f"projection geometry: need >= 2 projections, all tuples of one length ({lengths})"
            )
        if not all(np.all(np.isfinite(getattr(self, item.name))) for item in fields(self)):
            raise InputError("projection geometry: every value must be finite")
        if min(self.source_to_isocenter_mm) <= 0 or min(self.source_to_detector_mm) < 0:
            raise InputError("projection geometry: source-isocentre must be > 0 mm, source-detector >= 0 mm")
        parallel = [d == 0.0 for d in self.source_to_detector_mm]
        if any(parallel) and not all(parallel):
            raise InputError("projection geometry: parallel (SDD = 0) and cone-beam projections are mixed")

    @classmethod
    def circular(cls, sid, sdd, gantry_deg, offset_x=0.0, offset_y=0.0) -> ProjectionGeometry:
        """A circular scan: scalar ``sid``/``sdd`` (mm), one gantry angle per view (degrees), offsets (mm)."""
        angles = _floats(gantry_deg)
        count = len(angles)
        return cls(
            _floats(sid, count),
            _floats(sdd, count),
            angles,
            _floats(offset_x, count),
            _floats(offset_y, count),
        )

    @property
    def count(self) -> int:
        return len(self.gantry_deg)

    @property
    def is_parallel(self) -> bool:
        return all(d == 0.0 for d in self.source_to_detector_mm)

    @property
    def magnification(self) -> float:
        """Mean source-detector / source-isocentre distance ratio (1 for a parallel beam)."""
        if self.is_parallel:
            return 1.0
        return float(np.mean(np.divide(self.source_to_detector_mm, self.source_to_isocenter_mm)))

    def angular_gaps_deg(self) -> np.ndarray:
        """(distinct angles,) gaps from each sorted gantry angle to the next, around the circle (degrees)."""
        angles = np.unique(self.gantry_deg)
        return np.diff(np.append(angles, angles[0] + 360.0))

    @property
    def arc_deg(self) -> float:
        """The angular range the views span: 360 degrees less the largest gap between neighbours."""
        return float(360.0 - self.angular_gaps_deg().max())

    @property
    def is_short_scan(self) -> bool:
        """Whether one gap dominates: over 20 degrees (rtkfdk's threshold) and twice the next largest.

        The second condition keeps a phase-binned full scan (views in clusters, one per breathing cycle,
        gaps of 20-40 degrees between them) from being taken for a short scan.
        """
        gaps = np.sort(self.angular_gaps_deg())[::-1]
        second = gaps[1] if gaps.size > 1 else 0.0
        return bool(gaps[0] > SHORT_SCAN_GAP_DEG and gaps[0] > 2.0 * second)

    @property
    def is_half_fan(self) -> bool:
        return bool(np.max(np.abs(self.projection_offset_x_mm)) > HALF_FAN_TOLERANCE_MM)

    def subset(self, indices) -> ProjectionGeometry:
        """The projections at ``indices`` (a sequence of ints, in that order)."""
        picked = np.asarray(indices, dtype=int)
        if picked.ndim != 1 or picked.size < 2 or picked.min() < -self.count or picked.max() >= self.count:
            raise InputError(f"projection geometry subset: need >= 2 indices in [0, {self.count})")
        return ProjectionGeometry(*(tuple(np.asarray(getattr(self, f.name))[picked]) for f in fields(self)))

    def summary(self) -> dict:
        """Count, arc, mean SID/SDD, half-fan, short scan and parallel: for logs and report.json."""
        return {
            "count": self.count,
            "arc_deg": round(self.arc_deg, 3),
            "sid_mm": round(float(np.mean(self.source_to_isocenter_mm)), 3),
            "sdd_mm": round(float(np.mean(self.source_to_detector_mm)), 3),
            "half_fan": self.is_half_fan,
            "short_scan": self.is_short_scan,
            "parallel": self.is_parallel,
        }

    def to_dict(self) -> dict:
        """Every per-projection list by name (JSON: the session manifest, the worker protocol)."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ProjectionGeometry:
        try:
            return cls(**{f.name: tuple(data.get(f.name, ())) for f in fields(cls)})
        except TypeError as error:
            raise InputError(f"projection geometry: not a geometry record ({error})") from None

    def to_rtk(self):
        """RTK's ``ThreeDCircularProjectionGeometry`` with these projections (imports RTK)."""
        geometry = rtk_module().ThreeDCircularProjectionGeometry.New()
        for values in zip(*(getattr(self, f.name) for f in fields(self))):
            geometry.AddProjection(*values)
        return geometry

    @classmethod
    def from_rtk(cls, geometry) -> ProjectionGeometry:
        """From RTK's ``ThreeDCircularProjectionGeometry`` (which stores angles in radians)."""
        deg = lambda values: tuple(math.degrees(v) for v in values)
        return cls(
            tuple(geometry.GetSourceToIsocenterDistances()),
            tuple(geometry.GetSourceToDetectorDistances()),
            deg(geometry.GetGantryAngles()),
            tuple(geometry.GetProjectionOffsetsX()),
            tuple(geometry.GetProjectionOffsetsY()),
            deg(geometry.GetOutOfPlaneAngles()),
            deg(geometry.GetInPlaneAngles()),
            tuple(geometry.GetSourceOffsetsX()),
            tuple(geometry.GetSourceOffsetsY()),
        )


def _checked_root(path: Path):
    """The file's root element (ElementTree), which must be RTK's: RTK's reader takes any XML without
    complaint (an Elekta _Frames.xml reads as no projections)."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise InputError(f"RTK geometry file {path}: not a valid geometry ({error})") from None
    if root.tag != RTK_GEOMETRY_ROOT:
        raise InputError(
            f"RTK geometry file {path}: not a valid geometry (root <{root.tag}>, not <{RTK_GEOMETRY_ROOT}>)"
        )
    return root


def read_geometry(path: str | Path) -> ProjectionGeometry:
    """An RTK geometry XML file (``ThreeDCircularProjectionGeometryXMLFileReader``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"RTK geometry file {path}: not found")
    _checked_root(path)
    reader = rtk_module().ThreeDCircularProjectionGeometryXMLFileReader.New()
    reader.SetFilename(str(path))
    try:
        reader.GenerateOutputInformation()
        geometry = ProjectionGeometry.from_rtk(reader.GetOutputObject())
    except (RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(f"RTK geometry file {path}: not a valid geometry ({reason})") from None
    return geometry


def phase_reconstruction(path: str | Path) -> str:
    """How the phase image of the geometry file ``path`` was reconstructed: "fdk" unless the file says
    otherwise (``write_geometry``'s ``reconstruction``)."""
    element = _checked_root(Path(path)).find(PHASE_RECONSTRUCTION)
    kind = (element.text or "").strip() if element is not None else "fdk"
    if kind not in RECONSTRUCTIONS:
        raise InputError(
            f"RTK geometry file {path}: unknown <{PHASE_RECONSTRUCTION}> {kind!r} "
            f"(one of {', '.join(RECONSTRUCTIONS)})"
        )
    return kind


def write_geometry(geometry: ProjectionGeometry, path: str | Path, reconstruction: str = "fdk") -> Path:
    """Write RTK's geometry XML atomically (a temporary file in the same folder, then ``os.replace``).

    ``reconstruction``: how the phase image these projections made was reconstructed; other than "fdk"
    it is written as a <PhaseReconstruction> element (``phase_reconstruction`` reads it back)."""
    path = Path(path)
    writer = rtk_module().ThreeDCircularProjectionGeometryXMLFileWriter.New()
    try:
        with tempfile.TemporaryDirectory(prefix="rso-geometry-") as scratch:
            written = Path(scratch) / "geometry.xml"
            writer.SetFilename(str(written))
            rtk_geometry = geometry.to_rtk()  # the writer holds a raw pointer: keep the object alive
            writer.SetObject(rtk_geometry)
            writer.WriteFile()
            text = _with_reconstruction(written.read_bytes(), reconstruction)
            write_bytes_atomically(text, path)  # the usual file mode, never a partial file
    except (OSError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot write the RTK geometry file {path}: {reason}") from None
    return path


def _with_reconstruction(text: bytes, reconstruction: str) -> bytes:
    """RTK's XML with the <PhaseReconstruction> element as the root's first child (none for FDK)."""
    if reconstruction == "fdk":
        return text
    root = f"<{RTK_GEOMETRY_ROOT}".encode()
    end = text.index(b">", text.index(root)) + 1
    element = f"\n  <{PHASE_RECONSTRUCTION}>{reconstruction}</{PHASE_RECONSTRUCTION}>".encode()
    return text[:end] + element + text[end:]


def _index_axes(image: sitk.Image) -> np.ndarray:
    """(3, 3) LPS unit vectors of the image's index axes i, j, k, as columns."""
    return np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)


def _centre(image: sitk.Image) -> np.ndarray:
    """(3,) LPS mm: the centre of the image's voxel grid (halfway between the first and last voxels)."""
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()]))


@dataclass(frozen=True)
class Placement:
    """Where an image sits in RTK's frame: an affine map from RTK-frame points (mm) to image LPS points.

    Default (``matrix`` None): the image's centre is the isocentre, its index axis i lies along RTK's +x,
    k along +y (the rotation axis) and j along -z. For an axial LPS volume of a supine head-first patient
    that is IEC 61217's fixed frame (x left, y superior, z anterior): right-handed, so gantry angles mean
    what the scanner meant (j along +z would mirror the patient and reverse the rotation).
    """

    matrix: tuple[float, ...] | None = None  # 3x3 row-major, RTK -> LPS
    translation: tuple[float, float, float] | None = None  # LPS mm

    @classmethod
    def default(cls) -> Placement:
        return cls()

    def to_dict(self) -> dict:
        """JSON for the session manifest: {"matrix": 9 numbers or None, "translation": 3 or None}."""
        return {
            "matrix": self.matrix and list(self.matrix),
            "translation": self.translation and list(self.translation),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Placement:
        matrix, translation = data.get("matrix"), data.get("translation")
        return cls(tuple(matrix) if matrix else None, tuple(translation) if translation else None)

    @property
    def is_default(self) -> bool:
        return self.matrix is None

    @classmethod
    def from_transform(cls, path: str | Path) -> Placement:
        """An ITK affine transform file (.tfm/.txt) mapping RTK-frame points (mm) to image LPS points."""
        transform = read_transform_file(path, "placement transform")
        offset = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
        columns = [np.asarray(transform.TransformPoint(tuple(e))) - offset for e in np.eye(3) * 100.0]
        matrix = np.stack(columns, axis=1) / 100.0
        probe = np.array([37.0, -55.0, 81.0])
        affine = np.allclose(transform.TransformPoint(tuple(probe)), matrix @ probe + offset, atol=1e-4)
        if not affine or abs(np.linalg.det(matrix)) < 1e-9:
            raise InputError(f"placement transform {path}: not an invertible affine transform")
        return cls(tuple(float(v) for v in matrix.ravel()), tuple(float(v) for v in offset))

    def rtk_to_lps(self, image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
        """(3, 3) matrix A and (3,) translation t: LPS point = A @ RTK point + t, for this image."""
        if self.is_default:
            axes = _index_axes(image)
            return np.stack([axes[:, 0], axes[:, 2], -axes[:, 1]], axis=1), _centre(image)
        return np.asarray(self.matrix).reshape(3, 3), np.asarray(self.translation)

    def rtk_grid(self, image: sitk.Image) -> sitk.Image:
        """An empty float32 RTK-frame grid (identity direction) holding the image, its spacing permuted."""
        matrix, offset = self.rtk_to_lps(image)
        # For each RTK axis, the index axis most nearly parallel to it gives the spacing
        alignment = np.abs(_index_axes(image).T @ matrix / np.linalg.norm(matrix, axis=0))
        spacing = np.asarray(image.GetSpacing())[np.argmax(alignment, axis=0)]
        size = np.asarray(image.GetSize()) - 1
        corners = np.array([[a, b, c] for a in (0, size[0]) for b in (0, size[1]) for c in (0, size[2])])
        lps = np.array(
            [image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners.astype(float)]
        )
        rtk = np.linalg.solve(matrix, (lps - offset).T).T
        low, high = rtk.min(axis=0), rtk.max(axis=0)
        count = np.floor((high - low) / spacing + 1e-6).astype(int) + 1
        origin = (low + high) / 2.0 - (count - 1) / 2.0 * spacing
        grid = sitk.Image([int(n) for n in count], sitk.sitkFloat32)
        grid.SetSpacing(spacing.tolist())
        grid.SetOrigin(origin.tolist())
        return grid

    def to_rtk(self, image: sitk.Image) -> sitk.Image:
        """The image (any pixel type) as float32 on an axis-aligned RTK-frame grid.

        Default placement: an exact re-indexing, array (k, j, i) -> RTK's (z, y, x) = (j reversed, k, i).
        """
        grid = self.rtk_grid(image)
        if self.is_default:
            array = sitk.GetArrayFromImage(image).astype(np.float32)
            volume = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(1, 0, 2)[::-1]))
            volume.CopyInformation(grid)
            return volume
        return sitk.Resample(
            sitk.Cast(image, sitk.sitkFloat32), grid, self._transform(image), sitk.sitkLinear, 0.0
        )

    def from_rtk(self, volume: sitk.Image, like: sitk.Image) -> sitk.Image:
        """An RTK-frame volume back on ``like``'s grid (float32): the inverse of ``to_rtk``."""
        grid = self.rtk_grid(like)
        same = volume.GetSize() == grid.GetSize() and np.allclose(
            volume.GetOrigin(), grid.GetOrigin(), atol=1e-6
        )
        same = same and np.allclose(volume.GetSpacing(), grid.GetSpacing(), atol=1e-9)
        if self.is_default and same and np.allclose(volume.GetDirection(), np.eye(3).ravel()):
            array = sitk.GetArrayFromImage(volume).astype(np.float32)[::-1].transpose(1, 0, 2)
            image = sitk.GetImageFromArray(np.ascontiguousarray(array))
            image.CopyInformation(like)
            return image
        inverse = self._transform(like).GetInverse()
        return sitk.Resample(sitk.Cast(volume, sitk.sitkFloat32), like, inverse, sitk.sitkLinear, 0.0)

    def _transform(self, image: sitk.Image) -> sitk.AffineTransform:
        matrix, offset = self.rtk_to_lps(image)
        return sitk.AffineTransform(matrix.ravel().tolist(), offset.tolist())
