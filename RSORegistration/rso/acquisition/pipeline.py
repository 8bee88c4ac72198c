"""From the scanner to the phases: projections + geometry + breathing signal -> one FDK image per phase.

The output folder (written whole or not at all: built in a temporary folder beside it, then renamed)::

    cbct_phaseK.nii.gz            phase K, HU (FDK with rtkfdk's weighting, mu -> HU with mu_water)
    cbct_phaseK_geometry.xml      the RTK geometry of the views phase K was reconstructed from
    phase_signal.txt              the phase of every projection (RTK's signal file format)
    phases.json                   views, clusters and arc per phase; the inputs; the grid

Each image and its geometry file are what ``rso-registration register --fixed-geometry/--moving-geometry``
takes. Images sit in the default placement (``rso.core.projection.Placement``: the image's centre is the
isocentre, i/j/k along RTK's x/-z/y) unless a placement transform is given.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.acquisition.readers import Projections, projection_files, read_projections
from rso.acquisition.scanners import find_geometry, geometry_kind, read_scanner_geometry
from rso.acquisition.signal import SIGNAL_KINDS, check_phases, phase_of, read_signal, shroud_signal
from rso.acquisition.sorting import PhaseSorting, sort_phases
from rso.core.projection.conebeam import FDK_HANN_CUT
from rso.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_SPACING_MM = 2.0
MAX_VOXELS = 512**3  # a grid beyond this is a mistake (a spacing in metres?), not a reconstruction


@dataclass(frozen=True)
class ScanSource:
    """Where the scan is: projections (a file or a folder), geometry (None: found beside them)."""

    projections: Path
    geometry: Path | None = None
    regexp: str | None = None  # selects projection files in a folder by name
    dicom_uid: str | None = None  # Elekta FRAME.DBF: the acquisition (default: from the img_<UID> folder)
    binning: int = 1  # shrink factor of the projections along u and v


@dataclass(frozen=True)
class SignalSource:
    """The breathing signal: a text file (one value per projection) or, without one, the projections'."""

    path: Path | None = None
    kind: str = "phase"  # "phase" in [0, 1) or "amplitude" (larger = deeper inhale)
    model: str = "minima"  # amplitude -> phase (signal.PHASE_MODELS)
    invert: bool = False  # negate the amplitude first (a surrogate that falls on inhale)


@dataclass(frozen=True)
class OutputGrid:
    """The phases' voxel grid: a reference image's, or ``size`` (i, j, k) voxels of ``spacing_mm``."""

    spacing_mm: tuple[float, float, float] | None = None
    size: tuple[int, int, int] | None = None  # None: the scanner's field of view
    reference: Path | None = None
    placement: Path | None = None  # ITK affine transform file: RTK-frame points -> image LPS points


def breathing_phase(signal: SignalSource, projections: Projections) -> tuple[np.ndarray, dict]:
    """(P,) phases in [0, 1) and how they were found."""
    if signal.kind not in SIGNAL_KINDS:
        raise InputError(f"--signal-kind must be one of {SIGNAL_KINDS}, got {signal.kind!r}")
    if signal.path is not None:
        values = read_signal(signal.path, projections.count)
        source = {"source": str(signal.path), "kind": signal.kind}
        if signal.kind == "phase":
            return check_phases(values, f"breathing signal {signal.path}"), source
    else:
        values = shroud_signal(projections)
        source = {"source": "amsterdam-shroud", "kind": "amplitude"}
    values = -values if signal.invert else values
    return phase_of(values, signal.model), {**source, "model": signal.model, "inverted": signal.invert}


def field_of_view_grid(geometry, detector, spacing_mm) -> sitk.Image:
    """An empty LPS image (identity direction, centred on 0) covering the scan's reconstructable cylinder.

    Radius: the ray farthest from the central ray (projection offsets included: a half-fan scan
    reaches twice as far), at the isocentre; length: the panel's v extent demagnified to the isocentre.
    """
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), 3)
    (size_u, size_v), (pixel_u, pixel_v) = detector.size_px, detector.spacing_mm
    u = detector.origin_mm[0] + np.array([0.0, (size_u - 1) * pixel_u])
    reach = float(np.max(np.abs(u[None, :] + np.asarray(geometry.projection_offset_x_mm)[:, None])))
    sid, sdd = min(geometry.source_to_isocenter_mm), float(np.mean(geometry.source_to_detector_mm))
    radius = reach if geometry.is_parallel else sid * reach / math.hypot(sdd, reach)
    length = (size_v - 1) * pixel_v * (1.0 if geometry.is_parallel else sid / sdd)
    extent = np.array([2 * radius, 2 * radius, length])  # i (RTK x), j (RTK z), k (RTK y)
    return blank_grid(np.maximum(2, np.floor(extent / spacing + 1e-6).astype(int) + 1), spacing)


def blank_grid(size, spacing) -> sitk.Image:
    """An empty float32 LPS image of ``size`` (i, j, k) voxels of ``spacing`` mm, centred on 0."""
    size, spacing = np.asarray(size, dtype=int), np.asarray(spacing, dtype=float)
    if size.min() < 2 or spacing.min() <= 0 or float(np.prod(size.astype(float))) > MAX_VOXELS:
        raise InputError(f"output grid of {size.tolist()} voxels of {spacing.tolist()} mm: not a usable grid")
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin((-(size - 1) / 2.0 * spacing).tolist())
    return grid


def output_grid(grid: OutputGrid, geometry, detector):
    """(like: the LPS grid of the phases, placement) for ``grid``."""
    from rso.core.imageio import read_image
    from rso.core.projection import Placement

    placement = Placement.from_transform(grid.placement) if grid.placement else Placement.default()
    if grid.reference is not None:
        if grid.size is not None or grid.spacing_mm is not None:
            raise InputError("--reference sets the output grid: leave out --size and --spacing")
        return read_image(grid.reference, "reference image"), placement
    spacing = grid.spacing_mm if grid.spacing_mm is not None else (DEFAULT_SPACING_MM,) * 3
    if grid.size is not None:
        return blank_grid(grid.size, np.broadcast_to(np.asarray(spacing, dtype=float), 3)), placement
    return field_of_view_grid(geometry, detector, spacing), placement


def make_phases(
    scan: ScanSource,
    signal: SignalSource,
    grid: OutputGrid,
    out: str | Path,
    phases: int = 10,
    hann_cut: float = FDK_HANN_CUT,
    overwrite: bool = False,
    reconstruction: str = "fdk",
) -> dict:
    """Read the scan, sort it into ``phases`` breathing phases, reconstruct each and write ``out``.

    ``reconstruction``: one of rso.core.projection.RECONSTRUCTIONS; ``hann_cut`` is FDK's alone.

    Returns the summary written to ``out/phases.json``. Bad input raises a one-line ``InputError``
    before anything is written; ``out`` appears whole (or, with ``overwrite``, is replaced whole).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output folder {out} already exists: pass --overwrite to replace it")
    _check_reconstruction(reconstruction, hann_cut)
    files = projection_files(scan.projections, scan.regexp)
    geometry_file = find_geometry(scan.projections, scan.geometry)
    projections = read_projections(files, scan.binning)
    geometry = read_scanner_geometry(geometry_file, projections, scan.dicom_uid)
    phase, signal_summary = breathing_phase(signal, projections)
    sorting = sort_phases(phase, phases)
    detector = projections.detector()
    like, placement = output_grid(grid, geometry, detector)
    summary = {
        "projections": {"source": str(scan.projections), **projections.summary()},
        "geometry": {"file": str(geometry_file), "kind": geometry_kind(geometry_file), **geometry.summary()},
        "signal": signal_summary,
        "grid": {
            "size": list(like.GetSize()),
            "spacing_mm": [round(s, 6) for s in like.GetSpacing()],
            "reference": str(grid.reference) if grid.reference else None,
            "placement": str(grid.placement) if grid.placement else "default",
        },
        "units": "HU",
        "reconstruction": reconstruction,
        "hann_cut": hann_cut if reconstruction == "fdk" else None,
        "phases": sorting.summary(geometry),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_phases(
            building, projections, geometry, sorting, (like, placement, reconstruction, hann_cut), summary
        )
        _move_into_place(building, out, overwrite)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log.info("wrote %d phases to %s", phases, out)
    return summary


def _write_phases(folder: Path, projections, geometry, sorting: PhaseSorting, recon, summary: dict) -> None:
    from rso.core.imageio import write_image
    from rso.core.projection import FOV_MASK, mu_to_hu, reconstruct, scan_field_of_view, write_geometry

    like, placement, reconstruction, hann_cut = recon
    like_rtk = placement.rtk_grid(like)
    detector = projections.detector()
    for k, row in enumerate(summary["phases"]):
        picked = sorting.indices(k)
        views = geometry.subset(picked)
        log.info("phase %d: %s of %d views in %d clusters", k, reconstruction, picked.size, row["clusters"])
        lines = projections.line_integrals[picked]
        mu = reconstruct(reconstruction, lines, views, detector, like_rtk, hann_cut)
        image = mu_to_hu(placement.from_rtk(mu, like))
        row["image"], row["geometry"] = f"cbct_phase{k}.nii.gz", f"cbct_phase{k}_geometry.xml"
        write_image(image, folder / row["image"])
        write_geometry(views, folder / row["geometry"], reconstruction)
    # What the scanner saw, for the user to know where the phases are images at all (docs/scanner-import.md).
    fov = scan_field_of_view(like, placement, geometry, detector)
    write_image(fov, folder / FOV_MASK)
    summary["field_of_view"] = {"mask": FOV_MASK, "share_of_grid": _share(fov)}
    np.savetxt(folder / "phase_signal.txt", sorting.phase, fmt="%.6f")
    (folder / "phases.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _share(mask: sitk.Image) -> float:
    """The share of a binary image's voxels that are set."""
    return round(float(sitk.GetArrayViewFromImage(mask).mean()), 4)


def _check_reconstruction(reconstruction: str, hann_cut: float) -> None:
    from rso.core.projection import RECONSTRUCTIONS

    if reconstruction not in RECONSTRUCTIONS:
        raise InputError(
            f"--reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, not {reconstruction!r}"
        )
    if reconstruction != "fdk" and hann_cut != FDK_HANN_CUT:
        raise InputError(f"--hann is FDK's ramp filter: --reconstruction {reconstruction} does not use it")


def _move_into_place(building: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder to ``out``; an old ``out`` (overwrite) is moved aside, then removed."""
    os.chmod(building, 0o755)
    if out.exists():
        if not overwrite:
            raise InputError(f"output folder {out} appeared while the phases were made; nothing replaced")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(building, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(building, out)
