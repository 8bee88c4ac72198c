"""Tiny scanner files in each vendor's format, written from their readers in RTK 2.7 (src/rtk*ImageIO.cxx,
src/rtk*GeometryReader.cxx, src/rtkDbf.cxx), for the tests of rso.acquisition.

* Elekta .his (Heimann): a 68-byte header (magic 0 112 68 0; extra header size; the corners ulx, uly,
  brx, bry; the frame count), the extra header, then uint16 pixels. RTK reads dimension 0 as bry-uly+1
  and gives the panel 409.6 mm whatever the pixel count.
* Varian .hnd (OBI) and .xim (TrueBeam) share one compression: a lookup table of 2-bit byte widths per
  pixel (4 per byte), the first row and one pixel as uint32, then each next pixel as the difference
  d = p[i] - p[i-1] - p[i-nx] + p[i-nx-1] in that width. Written here in the simplest valid encoding:
  every difference as int32 (code 2: table bytes 0xAA), plus the one redundant difference RTK reads.
  .hnd: a packed header (sizes, then 41 doubles: the projection angle, the pixel size) padded to 1024
  bytes. .xim: 'XIM.0100', version, sizes, bits/bytes per pixel, compression 1, the table and the
  compressed buffer (with their byte counts), the uncompressed size, an empty histogram and typed
  properties (KVSourceRtn in degrees; PixelWidth/Height and KVDetectorLat/Lng in cm).
* Elekta FRAME.DBF + IMAGE.DBF: dBase III tables; Elekta _Frames.xml: ProjectionSet/Frames/Frame.
* Varian Scan.xml: OBI's Calibrated* keys or TrueBeam's SAD/SID.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# after dSliceZPos, the header's other 40 doubles, in order
HND_DOUBLES = (
    *("GantryRtn", "SAD", "SFD", "CollX1", "CollX2", "CollY1", "CollY2", "CollRtn", "FieldX", "FieldY"),
    *("BladeX1", "BladeX2", "BladeY1", "BladeY2", "IDUPosLng", "IDUPosLat", "IDUPosVrt", "IDUPosRtn"),
    *("PatientSupportAngle", "TableTopEccentricAngle", "CouchVrt", "CouchLng", "CouchLat"),
    *("IDUResolutionX", "IDUResolutionY", "ImageResolutionX", "ImageResolutionY", "Energy", "DoseRate"),
    *("XRayKV", "XRayMA", "MetersetExposure", "AcqAdjustment", "CTProjectionAngle", "CTNormChamber"),
    *("GatingTimeTag", "Gating4DInfoX", "Gating4DInfoY", "Gating4DInfoZ", "Gating4DInfoTime"),
)


def write_his(path: Path, frames: np.ndarray) -> Path:
    """frames: (N, rows, columns) raw uint16 counts; RTK reads (columns, rows, N)."""
    count, rows, columns = frames.shape
    header = bytearray(68)
    header[0:4] = bytes([0, 112, 68, 0])
    struct.pack_into("<H", header, 10, 32)  # the extra header's size
    struct.pack_into("<5H", header, 12, 1, 1, rows, columns, count)  # ulx, uly, brx, bry, frames
    header[32] = 4  # uint16 pixels
    path.write_bytes(bytes(header) + bytes(32) + np.asarray(frames, dtype="<u2").tobytes())
    return path


def _differences(image: np.ndarray) -> np.ndarray:
    rows, columns = image.shape
    assert (rows - 1) * columns % 4 == 0, "RTK decodes 4 pixels per table byte"
    flat = image.astype(np.int64).ravel()
    i = np.arange(columns + 1, rows * columns)
    d = flat[i] - flat[i - 1] - flat[i - columns] + flat[i - columns - 1]
    return np.append(d, 0)  # RTK reads a 4th, redundant difference for the last pixel


def _compressed(image: np.ndarray) -> tuple[bytes, bytes]:
    """(lookup table, pixel buffer): the first row + 1 as uint32, then int32 differences."""
    differences = _differences(image)
    table = bytes([0xAA]) * (differences.size // 4)
    start = image.ravel()[: image.shape[1] + 1].astype("<u4").tobytes()
    return table, start + differences.astype("<i4").tobytes()


def write_hnd(path: Path, image: np.ndarray, angle_deg: float, pixel_mm=(0.784, 0.784)) -> Path:
    """image: (rows, columns) raw uint32 counts (columns a multiple of 4)."""
    rows, columns = image.shape
    header = b"".join(
        [
            b"VARIAN_HND".ljust(32, b"\0"),
            struct.pack("<I4sI8s8s16sI16sI16sI", 0, b"", 0, b"", b"", b"", 0, b"", 0, b"", 0),
            struct.pack("<IId16sIII4s", columns, rows, 0.0, b"", 0, 0, 0, b""),
        ]
    )
    values = dict.fromkeys(HND_DOUBLES, 0.0)
    values.update(IDUResolutionX=pixel_mm[0], IDUResolutionY=pixel_mm[1], CTProjectionAngle=angle_deg)
    header += struct.pack(f"<{len(HND_DOUBLES)}d", *(values[name] for name in HND_DOUBLES))
    table, pixels = _compressed(image)
    path.write_bytes(header.ljust(1024, b"\0") + table + pixels)
    return path


def _xim_double(name: str, value: float) -> bytes:
    return struct.pack("<I", len(name)) + name.encode() + struct.pack("<Id", 1, value)


def write_xim(path: Path, image: np.ndarray, angle_deg: float, pixel_mm=(0.388, 0.388), offset_mm=(0.0, 0.0)):
    """image: (rows, columns) raw uint32 counts (columns a multiple of 4); angle: the kV source's (deg)."""
    rows, columns = image.shape
    table, pixels = _compressed(image)
    properties = {
        "KVSourceRtn": angle_deg,
        "PixelWidth": pixel_mm[0] / 10.0,
        "PixelHeight": pixel_mm[1] / 10.0,
        "KVDetectorLat": offset_mm[0] / 10.0,
        "KVDetectorLng": offset_mm[1] / 10.0,
    }
    path.write_bytes(
        b"".join(
            [
                b"XIM.0100",
                struct.pack("<6I", 1, columns, rows, 32, 4, 1),  # version, sizes, bits, bytes, compressed
                struct.pack("<I", len(table)) + table,
                struct.pack("<I", len(pixels)) + pixels,
                struct.pack("<3I", rows * columns * 4, 0, len(properties)),  # uncompressed, histogram
                b"".join(_xim_double(name, value) for name, value in properties.items()),
            ]
        )
    )
    return path


def write_dbf(path: Path, fields, records) -> Path:
    """A dBase III table: fields [(name, 'C' or 'N', width)], records [tuple of values]."""
    header_size = 32 + 32 * len(fields) + 1
    record_size = 1 + sum(width for _, _, width in fields)
    out = bytearray(struct.pack("<4BIHH", 3, 125, 1, 1, len(records), header_size, record_size) + bytes(20))
    for name, kind, width in fields:
        out += name.encode().ljust(11, b"\0") + kind.encode() + bytes(4) + bytes([width, 0]) + bytes(14)
    out += b"\r"
    for record in records:
        cells = [
            (str(v).encode().ljust if kind == "C" else str(v).encode().rjust)(width)[:width]
            for v, (_, kind, width) in zip(record, fields)
        ]
        out += b" " + b"".join(cells)
    path.write_bytes(bytes(out) + b"\x1a")
    return path


def write_elekta_dbf(folder: Path, uid: str, angles_deg, u_centre_mm=0.0, v_centre_mm=0.0) -> Path:
    """IMAGE.DBF (two acquisitions) and FRAME.DBF (frames of both, interleaved); returns FRAME.DBF."""
    write_dbf(folder / "IMAGE.DBF", [("DBID", "C", 8), ("DICOM_UID", "C", 64)], [("1", "9.9.9"), ("2", uid)])
    frames = [("1", 0.0, 0.0, 0.0)] + [("2", a, u_centre_mm, v_centre_mm) for a in angles_deg]
    fields = [("IMA_DBID", "C", 8), ("PROJ_ANG", "N", 12), ("U_CENTRE", "N", 10), ("V_CENTRE", "N", 10)]
    return write_dbf(folder / "FRAME.DBF", fields, frames)


def write_frames_xml(path: Path, angles_deg, u_centre_mm=0.0, v_centre_mm=0.0) -> Path:
    """Elekta XVI 5's _Frames.xml (RTK: angle < 0 -> + 360; offsets = -centre; SID 1000, SDD 1536)."""
    frames = "".join(
        f"<Frame><Seq>{i + 1}</Seq><GantryAngle>{a}</GantryAngle><Exposed>True</Exposed>"
        f"<UCentre>{u_centre_mm}</UCentre><VCentre>{v_centre_mm}</VCentre></Frame>\n"
        for i, a in enumerate(angles_deg)
    )
    path.write_text(f'<?xml version="1.0"?>\n<ProjectionSet><Frames>\n{frames}</Frames></ProjectionSet>\n')
    return path


def write_obi_scan_xml(path: Path, sid=1000.0, sdd=1500.0, offset=(0.0, 0.0), half_fan_lat=None) -> Path:
    fan = "HalfFan" if half_fan_lat is not None else "FullFan"
    lat = f"<DetectorPosLat>{half_fan_lat}</DetectorPosLat>" if half_fan_lat is not None else ""
    path.write_text(
        "<Scan><Acquisitions><GantryRtnSpeed>6</GantryRtnSpeed></Acquisitions><Calibration>"
        f"<CalibratedSAD>{sid}</CalibratedSAD><CalibratedSID>{sdd}</CalibratedSID>"
        f"<CalibratedDetectorOffsetX>{offset[0]}</CalibratedDetectorOffsetX>"
        f"<CalibratedDetectorOffsetY>{offset[1]}</CalibratedDetectorOffsetY>"
        f"<FanType>{fan}</FanType>{lat}</Calibration></Scan>\n"
    )
    return path


def write_probeam_scan_xml(path: Path, sid=1000.0, sdd=1500.0) -> Path:
    path.write_text(
        '<Scan xmlns="http://baden.varian.com/cr.xsd"><Acquisitions><Velocity>6</Velocity>'
        f"<SAD>{sid}</SAD><SID>{sdd}</SID><ImagerSizeX>8</ImagerSizeX><ImagerResX>0.388</ImagerResX>"
        "<Fan>Full</Fan></Acquisitions></Scan>\n"
    )
    return path
