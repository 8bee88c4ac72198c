"""DICOM folders: the series a folder holds, and reading one of them.

A 4D CT export often puts every phase in one folder, one series per phase. Reading "the first
series" would register the wrong phase without a word, so a folder with several series is refused
with a list of them (``list_series``), and ``read_series`` reads the one asked for, by series
instance UID or by its index in that list. ITK stacks a series' slices whatever their positions, with a
warning at most: two phases exported under one series UID become one volume at half the spacing, a
missing slice shifts every slice after it, and a gantry tilt's shear is dropped. ``read_series`` refuses
them (``check_slice_positions``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.errors import InputError

log = logging.getLogger(__name__)

TAGS = {  # SeriesInfo field -> DICOM tag, as GDCM names it in SimpleITK's meta-data
    "uid": "0020|000e",  # series instance UID
    "number": "0020|0011",  # series number
    "description": "0008|103e",  # series description
    "phase_percent": "0020|9241",  # nominal percentage of cardiac phase (4D CT exports use it for breathing)
    "trigger_time_ms": "0018|1060",
    "acquisition_time": "0008|0032",  # hhmmss.frac
}
POSITION_TAG, ORIENTATION_TAG = "0020|0032", "0020|0037"  # image position and orientation (patient)
# A slice-to-slice step may stray by this share of the typical step (the decimal text of positions rounds)
# before the series counts as tilted (sideways) or uneven (in length); a step shorter than this share of the
# longest repeats a position.
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a DICOM folder. The tag fields are the tags' text ("" where absent)."""

    index: int  # its place in list_series' order: by series number, then UID
    uid: str
    slices: int  # files of the series (one slice each for classic CT)
    number: str = ""
    description: str = ""
    phase_percent: str = ""
    trigger_time_ms: str = ""
    acquisition_time: str = ""

    def when(self) -> str:
        """The phase (or trigger or acquisition time), the first of them the series has, as text."""
        if self.phase_percent:
            return f"phase {self.phase_percent}%"
        if self.trigger_time_ms:
            return f"trigger {self.trigger_time_ms} ms"
        return f"acquired {self.acquisition_time}" if self.acquisition_time else ""

    def line(self) -> str:
        """``0: 1.2.3 'Phase 0%' phase 0% 90 slices`` (what is absent is left out)."""
        parts = [f"{self.index}: {self.uid}"]
        if self.description:
            parts.append(repr(self.description))
        if self.when():
            parts.append(self.when())
        parts.append(f"{self.slices} slice{'s' if self.slices != 1 else ''}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The DICOM series in ``folder`` (not its subfolders), ordered by series number, then UID.

    Reads the header of one file per series (no pixels). An empty list when there is none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        tags = {**_header_tags(files[0]), "uid": uid} if files else {"uid": uid}
        found.append((tags, len(files)))
    found.sort(key=lambda item: (_as_number(item[0].get("number", "")), item[0]["uid"]))
    return [SeriesInfo(index=index, slices=slices, **tags) for index, (tags, slices) in enumerate(found)]


def read_series(folder: str | os.PathLike, what: str = "image", series: str | None = None) -> sitk.Image:
    """Read one series of a DICOM folder: the only one, or ``series`` (a series UID or an index, as text).

    A folder with several series and no ``series`` is refused with one line listing them.
    """
    folder = Path(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise InputError(f"no DICOM series in folder {folder}")
    if series is None and len(uids) == 1:
        uid = uids[0]
    else:
        uid = _chosen(folder, what, series, list_series(folder))
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    check_slice_positions(files, f"{what} series {uid}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def check_slice_positions(files, what: str) -> None:
    """A one-line InputError unless the files' slices share one orientation and lie at distinct, evenly
    spaced positions along its normal, one behind the other (no gantry tilt). Files without both tags (a
    multi-frame file, a secondary capture) are not judged."""
    if len(files) < 3:
        return
    headers = [_geometry_tags(path) for path in files]
    if any(h is None for h in headers):
        return
    gaps, sideways = _slice_steps(headers, what)
    if np.any(sideways > SPACING_TOLERANCE * gaps.max()):
        tilt = np.degrees(np.arctan2(sideways.max(), gaps.max()))
        raise InputError(
            f"{what}: each slice is shifted sideways from the last (a gantry tilt of about {tilt:.1f} "
            "degrees), which a volume's grid cannot hold: resample it onto an upright grid first"
        )
    distinct = int(np.sum(gaps > SPACING_TOLERANCE * gaps.max())) + 1
    if distinct < len(files):
        raise InputError(
            f"{what} holds {len(files)} slices at only {distinct} positions: several phases or acquisitions "
            "share one series UID; export each as a series of its own"
        )
    typical = float(np.median(gaps))
    if np.abs(gaps - typical).max() > SPACING_TOLERANCE * typical:
        raise InputError(
            f"{what}: its slices are not evenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm apart, "
            f"typically {typical:.3g}): a missing slice would shift every slice after it"
        )


def _slice_steps(headers, what: str) -> tuple[np.ndarray, np.ndarray]:
    """From slice to slice in order along the orientation's normal: the step along it and the step sideways
    (mm), each (n - 1,). Refuses slices of different orientations."""
    orientations = np.array([h[1] for h in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise InputError(f"{what} mixes slice orientations (a localizer among the slices?): export it alone")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    positions = np.array([h[0] for h in headers])
    steps = np.diff(positions[np.argsort(positions @ normal)], axis=0)
    gaps = steps @ normal
    return gaps, np.linalg.norm(steps - gaps[:, None] * normal, axis=1)


def _geometry_tags(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A file's image position (3,) mm and orientation (6,) (row and column direction cosines), or None."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
        values = [reader.GetMetaData(tag) for tag in (POSITION_TAG, ORIENTATION_TAG)]
        position, orientation = (np.array([float(v) for v in text.split("\\")]) for text in values)
    except (RuntimeError, ValueError):
        return None
    return (position, orientation) if position.size == 3 and orientation.size == 6 else None


def _chosen(folder: Path, what: str, series: str | None, found: list[SeriesInfo]) -> str:
    """The UID of the series asked for (by UID or index), or a one-line InputError listing them all."""
    listing = "; ".join(info.line() for info in found)
    if series is None:
        raise InputError(
            f"{what} folder {folder} holds {len(found)} DICOM series; pick one with "
            f"--fixed-series/--moving-series (UID or index): {listing}"
        )
    series = str(series).strip()
    for info in found:
        if series == info.uid or series == str(info.index):
            return info.uid
    raise InputError(f"{what} folder {folder} has no DICOM series {series!r}; it holds: {listing}")


def _header_tags(path: str) -> dict:
    """The TAGS the file's header has (stripped text), without reading its pixels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:  # an unreadable header leaves the series without its description, not unlisted
        log.warning("could not read the DICOM header of %s", path)
        return {}
    keys = set(reader.GetMetaDataKeys())
    found = {name: _text(reader, tag) for name, tag in TAGS.items() if name != "uid" and tag in keys}
    return {name: text for name, text in found.items() if text}


def _text(reader: sitk.ImageFileReader, tag: str) -> str:
    try:
        return reader.GetMetaData(tag).strip()
    except UnicodeDecodeError:  # a description in a character set other than UTF-8: shown without it
        return ""


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")  # a series without a number comes after those with one
