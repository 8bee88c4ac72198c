"""The scanner's geometry, through RTK's readers: RTK XML, Elekta XVI and Synergy, Varian OBI and TrueBeam.

* RTK's own geometry XML (``ThreeDCircularProjectionGeometryXMLFileReader``);
* Elekta XVI 5 ``_Frames.xml`` (``ElektaXVI5GeometryXMLFileReader``: SID 1000 mm, SDD 1536 mm);
* Elekta ``FRAME.DBF`` + ``IMAGE.DBF`` (``ElektaSynergyGeometryReader``), for the acquisition named by its
  DICOM UID (given, from the projections' folder ``img_<UID>``, or the only one in IMAGE.DBF);
* Varian ``Scan.xml`` with OBI ``.hnd`` projections (``VarianObiGeometryReader``: angles from the files)
  or with TrueBeam ``.xim`` projections (``VarianProBeamGeometryReader``).

RTK 2.7's Varian readers dereference the XML's values unchecked (a missing one crashes the process), so
the keys they need are checked here first.
"""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from rso.acquisition.readers import Projections, itk_reason, rtk_module
from rso.errors import InputError

log = logging.getLogger(__name__)

KINDS = ("rtk", "elekta-xvi5", "elekta-dbf", "varian-obi", "varian-probeam")
OBI_KEYS = (
    "CalibratedSAD",
    "CalibratedSID",
    "CalibratedDetectorOffsetX",
    "CalibratedDetectorOffsetY",
    "FanType",
)
SEARCH_LEVELS = 4  # the projections' folder and three above it (Elekta: db/patient_ID/IMAGES/img_UID)
FORMATS = "an RTK geometry XML, an Elekta _Frames.xml or FRAME.DBF, or a Varian Scan.xml"


def _xml(path: Path) -> tuple[str, dict[str, str]] | None:
    """(root tag, {tag: text of its first element}) with namespaces dropped, or None if not XML."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError, UnicodeDecodeError):
        return None
    local = lambda tag: tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
    values: dict[str, str] = {}
    for element in root.iter():
        values.setdefault(local(element.tag), (element.text or "").strip())
    return local(root.tag), values


def geometry_kind(path: str | Path) -> str | None:
    """Which of ``KINDS`` the file is, or None when it is no scanner geometry."""
    path = Path(path)
    if path.name.lower() == "frame.dbf":
        return "elekta-dbf"
    if path.suffix.lower() != ".xml" or not path.is_file():
        return None
    parsed = _xml(path)
    if parsed is None:
        return None
    root, values = parsed
    if root == "RTKThreeDCircularGeometry":
        return "rtk"
    if "Frame" in values and (root == "ProjectionSet" or "Frames" in values):
        return "elekta-xvi5"
    if "CalibratedSAD" in values:
        return "varian-obi"
    if "SAD" in values and "SID" in values:
        return "varian-probeam"
    return None


def _candidates(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and geometry_kind(path) is not None)


def find_geometry(projections_source: str | Path, given: str | Path | None = None) -> Path:
    """The geometry file: ``given`` (a file or a folder), else the one found beside the projections.

    Without ``given``, the projections' folder is searched, then up to three folders above it; the first
    folder holding any geometry must hold exactly one.
    """
    if given is not None:
        given = Path(given)
        if given.is_file():
            if given.name.lower() == "image.dbf":  # the pair is named by its FRAME.DBF
                given = next((p for p in given.parent.iterdir() if p.name.lower() == "frame.dbf"), given)
            if geometry_kind(given) is None:
                raise InputError(f"unknown geometry format: {given} (expected {FORMATS})")
            return given
        if not given.is_dir():
            raise InputError(f"geometry not found: {given}")
        folders = [given]
    else:
        source = Path(projections_source)
        start = source if source.is_dir() else source.parent
        folders = [start, *list(start.resolve().parents)[: SEARCH_LEVELS - 1]]
    for folder in folders:
        found = _candidates(folder)
        if len(found) > 1:
            names = ", ".join(path.name for path in found)
            raise InputError(
                f"ambiguous geometry: several geometry files in {folder} ({names}); pass one with --geometry"
            )
        if found:
            log.info("scanner geometry: %s (%s)", found[0], geometry_kind(found[0]))
            return found[0]
    where = folders[0] if given is not None else f"{folders[0]} or the folders above it"
    raise InputError(f"no scanner geometry in {where}: pass --geometry ({FORMATS})")


def read_scanner_geometry(path: str | Path, projections: Projections, dicom_uid: str | None = None):
    """The ``ProjectionGeometry`` of ``projections`` from the geometry file ``path`` (from ``find_geometry``).

    The geometry must hold one projection per projection read: a mismatch is an error.
    """
    from rso.core.projection import ProjectionGeometry, read_geometry

    path = Path(path)
    kind = geometry_kind(path)
    if kind is None:
        raise InputError(f"unknown geometry format: {path} (expected {FORMATS})")
    if kind == "rtk":
        geometry = read_geometry(path)
    else:
        reader = {
            "elekta-xvi5": _elekta_xvi5,
            "elekta-dbf": _elekta_dbf,
            "varian-obi": _varian_obi,
            "varian-probeam": _varian_probeam,
        }[kind]
        try:
            rtk_geometry = reader(path, projections, dicom_uid)
        except RuntimeError as error:
            raise InputError(f"RTK could not read the {kind} geometry {path}: {itk_reason(error)}") from None
        try:
            geometry = ProjectionGeometry.from_rtk(rtk_geometry)
        except InputError as error:
            raise InputError(f"{kind} geometry {path}: {error}") from None
    if geometry.count != projections.count:
        raise InputError(
            f"geometry {path.name} has {geometry.count} projections but {projections.count} projections "
            "were read: they must match one to one"
        )
    log.info("geometry (%s): %s", kind, geometry.summary())
    return geometry


def _elekta_xvi5(path: Path, projections: Projections, dicom_uid):
    reader = rtk_module().ElektaXVI5GeometryXMLFileReader.New()
    reader.SetFilename(str(path))
    reader.GenerateOutputInformation()
    return reader.GetGeometry()


def _elekta_dbf(path: Path, projections: Projections, dicom_uid):
    image_dbf = next((p for p in path.parent.iterdir() if p.name.lower() == "image.dbf"), None)
    if image_dbf is None:
        raise InputError(f"Elekta geometry {path}: IMAGE.DBF is missing beside it")
    uid = dicom_uid or _dicom_uid(projections, image_dbf)
    reader = rtk_module().ElektaSynergyGeometryReader.New()
    reader.SetDicomUID(uid)
    reader.SetImageDbfFileName(str(image_dbf))
    reader.SetFrameDbfFileName(str(path))
    reader.UpdateOutputData()
    return reader.GetGeometry()


def _dicom_uid(projections: Projections, image_dbf: Path) -> str:
    """The acquisition's DICOM UID: from the projections' folder (img_<UID>) or IMAGE.DBF's only record."""
    folder = projections.files[0].parent.name
    if folder.lower().startswith("img_") and len(folder) > 4:
        return folder[4:]
    uids = [record.get("DICOM_UID", "") for record in dbf_records(image_dbf)]
    if len(uids) != 1:
        raise InputError(
            f"{image_dbf} lists {len(uids)} acquisitions and the projections' folder is not img_<UID>: "
            "name the acquisition with --dicom-uid"
        )
    return uids[0]


def dbf_records(path: str | Path) -> list[dict[str, str]]:
    """The records of a dBase III table (as RTK's ``rtk::DbfFile`` reads them), deleted ones left out."""
    data = Path(path).read_bytes()
    if len(data) < 32:
        raise InputError(f"{path}: not a dBase (.DBF) table")
    count, header_size, record_size = struct.unpack_from("<IHH", data, 4)
    fields, offset = [], 1
    for start in range(32, header_size - 1, 32):
        name = data[start : start + 11].split(b"\0", 1)[0].decode("ascii", "replace")
        fields.append((name, offset, data[start + 16]))
        offset += data[start + 16]
    records = []
    for index in range(count):
        record = data[header_size + index * record_size : header_size + (index + 1) * record_size]
        if len(record) == record_size and record[:1] != b"*":
            records.append(
                {name: record[at : at + size].decode("latin-1").strip() for name, at, size in fields}
            )
    return records


def _varian_values(path: Path, required, projections: Projections, suffixes: tuple[str, ...], kind: str):
    """Check the XML's values RTK will read, and that the projections are the format the reader expects."""
    values = _xml(path)[1]
    missing = [key for key in required if not _is_number(values.get(key)) and key != "FanType"]
    if "FanType" in required and not values.get("FanType"):
        missing.append("FanType")
    if missing:
        raise InputError(f"{kind} geometry {path}: missing or non-numeric {', '.join(missing)}")
    suffix = projections.files[0].suffix.lower()
    if suffix not in suffixes:
        raise InputError(
            f"{kind} geometry {path} goes with {'/'.join(suffixes)} projections, not {suffix} files"
        )
    return values


def _is_number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True


def _varian_obi(path: Path, projections: Projections, dicom_uid):
    values = _varian_values(path, OBI_KEYS, projections, (".hnd", ".hnc"), "Varian OBI")
    if values["FanType"].lower() == "halffan" and not _is_number(values.get("DetectorPosLat")):
        raise InputError(f"Varian OBI geometry {path}: a HalfFan scan needs DetectorPosLat")
    reader = rtk_module().VarianObiGeometryReader.New()
    reader.SetXMLFileName(str(path))
    reader.SetProjectionsFileNames([str(f) for f in projections.files])
    reader.UpdateOutputData()
    return reader.GetGeometry()


def _varian_probeam(path: Path, projections: Projections, dicom_uid):
    values = _varian_values(path, ("SAD", "SID"), projections, (".xim",), "Varian TrueBeam")
    order = list(values)
    for axis in "XY":  # RTK multiplies ImagerRes into a DetectorSize it must have read first
        if f"ImagerRes{axis}" in values and (
            f"ImagerSize{axis}" not in values
            or order.index(f"ImagerSize{axis}") > order.index(f"ImagerRes{axis}")
        ):
            raise InputError(
                f"Varian TrueBeam geometry {path}: ImagerRes{axis} comes before ImagerSize{axis}"
            )
    reader = rtk_module().VarianProBeamGeometryReader.New()
    reader.SetXMLFileName(str(path))
    reader.SetProjectionsFileNames([str(f) for f in projections.files])
    reader.UpdateOutputData()
    return reader.GetGeometry()
