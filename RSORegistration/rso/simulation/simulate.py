"""4D CT/CBCT cases with known ground truth, made from one real chest CT.

A case folder holds, for phases k = 0..N-1 and K = 1..N-1:
  ct_phasek.nii.gz     the CT at breathing phase k (phase 0 = end exhale = the source CT)
  cbct_phasek.nii.gz   a CBCT-like image of phase k (phase-binned sparse-view reconstruction)
  truth_0_K.nii.gz     the ground-truth field of the pair (fixed = phase 0, moving = phase K): an ITK
                       displacement field on the fixed grid, LPS mm, fixed -> moving points, so that
                       resampling ct_phaseK through it reproduces ct_phase0 (up to interpolation)
  labels_phasek.nii.gz the labels of phase k (lungs 1, an inserted lesion 2), moved by the true motion
  body_mask.nii.gz, lung_mask.nii.gz   masks of phase 0
  labels_phasek.nii.gz, labels_colors.txt   right lung, left lung and a 5-mm nodule at phase k, carried
                       from phase 0 with the phase's own inverse field: the truth for contour propagation
                       (rso.simulation.case_labels)
  case.json            source and its SHA-256, seed, drawn amplitudes, all parameters, versions

Phase K is made from the source by pulling it through the exact inverse of the truth field
(computed and checked to a few hundredths of a millimetre), so the truth is the model's own field,
not an estimate.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from rso import __version__
from rso.core.body import BODY_MARGIN_MM
from rso.core.imageio import (
    file_sha256,
    read_image,
    write_displacement_field,
    write_image,
)
from rso.core.projection import FOV_MASK
from rso.core.projection.geometry import RECONSTRUCTIONS, write_geometry
from rso.errors import InputError
from rso.simulation.anatomy import MaskParams, body_mask, lung_mask
from rso.simulation.case_labels import phase_labels, reference_labels, write_labels
from rso.simulation.field_of_view import as_a_console_writes, scanned_field_of_view
from rso.simulation.figures import plot_case as plot_case  # re-exported: the simulate command uses it
from rso.simulation.grid import AIR_HU, working_ct
from rso.simulation.lesion import LesionParams, draw_lesion, paint_lesion
from rso.simulation.motion import (
    BreathingMotion,
    MotionParams,
    breathing_curve,
    check_invertible,
    invert_field,
    jacobian_determinant,
)

if TYPE_CHECKING:
    from rso.simulation.cbct import CBCTParams  # imported lazily at run time: scikit-image is slow to import

log = logging.getLogger(__name__)

CASE_FORMAT = "rso-simulated-case/1"


@dataclass(frozen=True)
class SimulationParams:
    # Working grid: isotropic spacing (None keeps the source's), cropped to the body plus a margin
    # (None keeps the whole field of view). 2.5 mm keeps a case near 128 x 100 x 100 voxels.
    spacing_mm: float | None = 2.5
    crop_margin_mm: float | None = BODY_MARGIN_MM
    motion: MotionParams = field(default_factory=MotionParams)
    cbct: CBCTParams | None = None  # the parallel-beam projector's settings (None: its defaults)
    # A cone-beam scanner (rso.simulation.clinical.PRESETS, e.g. "xvi"): clinical 4D CBCT with RTK,
    # clustered views from an irregular breathing trace, noise and scatter. None: the parallel-beam projector.
    scanner: str | None = None
    # How a cone-beam phase is reconstructed from its projections (rso.core.projection.RECONSTRUCTIONS):
    # "fdk" as the vendors do, or "tv" as ``rso-registration phases --reconstruction tv`` does (-tv presets).
    reconstruction: str = "fdk"
    # Write each cone-beam phase as a vendor's console does: air outside the scan's field of view (the
    # region every view of the turn sees), where FDK's own image is a dark, streaked guess, and only the
    # slices the panel reaches along the rotation axis; the whole case is cut to them (-vendor presets).
    air_outside_field_of_view: bool = False
    masks: MaskParams = field(default_factory=MaskParams)

    def __post_init__(self):
        if self.reconstruction not in RECONSTRUCTIONS:
            raise InputError(
                f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, not {self.reconstruction!r}"
            )
        if self.reconstruction != "fdk" and self.scanner is None:
            raise InputError(
                f"reconstruction {self.reconstruction!r} needs a cone-beam preset (xvi, truebeam)"
            )
        if self.air_outside_field_of_view and self.scanner is None:
            raise InputError("air outside the field of view needs a cone-beam preset (xvi, truebeam)")

    @classmethod
    def preset(cls, name: str) -> SimulationParams:
        """``standard``: the breathing model of every earlier case; ``local``: large breathing (20-25 mm SI),
        lower lobes lagging 8 % of a cycle and an inserted lesion with its own trajectory, the local
        errors a whole-image fit leaves; ``clinical``: ``local`` imaged with the parallel projector's
        clinical preset; ``xvi`` and ``truebeam``: ``local`` imaged as clinical 4D CBCT by a cone-beam
        scanner like Elekta's XVI (full fan) or Varian's TrueBeam (half fan) (rso.simulation.clinical), each
        phase reconstructed by FDK; ``truebeam-4min``: the same half fan turning in 4 min, not 2; ``xvi-tv``
        and ``truebeam-tv``: the same scans, each phase by the TV reconstruction (``rso-registration phases
        --reconstruction tv``); ``xvi-vendor`` and ``truebeam-vendor``: the FDK phases written as a vendor's
        console writes them, air outside the scan's field of view and only the slices it reaches."""
        from rso.simulation.cbct import CBCTParams

        local = MotionParams(si_amplitude_mm=(20.0, 25.0), lower_lobe_lag=0.08, lesion=LesionParams())
        presets = {
            "standard": cls(),
            "local": cls(motion=local),
            "clinical": cls(motion=local, cbct=CBCTParams.clinical()),
            "xvi": cls(motion=local, scanner="xvi"),
            "truebeam": cls(motion=local, scanner="truebeam"),
            "truebeam-4min": cls(motion=local, scanner="truebeam-4min"),
            "xvi-tv": cls(motion=local, scanner="xvi", reconstruction="tv"),
            "truebeam-tv": cls(motion=local, scanner="truebeam", reconstruction="tv"),
            "xvi-vendor": cls(motion=local, scanner="xvi", air_outside_field_of_view=True),
            "truebeam-vendor": cls(motion=local, scanner="truebeam", air_outside_field_of_view=True),
        }
        if name not in presets:
            raise InputError(f"simulation preset must be one of {sorted(presets)}, not {name!r}")
        return presets[name]


SIMULATION_PRESETS = (
    "standard",
    "local",
    "clinical",
    "xvi",
    "truebeam",
    "truebeam-4min",
    "xvi-tv",
    "truebeam-tv",
    "xvi-vendor",
    "truebeam-vendor",
)


@dataclass
class Phase:
    """One breathing phase of a case: its image, and (for K > 0) the truth field 0 -> K."""

    index: int
    t: float
    ct: sitk.Image
    truth: sitk.Image | None
    info: dict
    labels: sitk.Image | None = None  # case_labels.LABELS at this phase


def make_phases(
    ct: sitk.Image,
    times: list[float],
    seed: int,
    motion: MotionParams = MotionParams(),
    masks: MaskParams = MaskParams(),
    progress: bool = False,
    indices: list[int] | None = None,
) -> tuple[list[Phase], BreathingMotion, sitk.Image, sitk.Image]:
    """CT phases at breathing times `times` (fractions of a cycle; 0 is end exhale) of an axis-aligned CT.

    With ``motion.lesion`` a lesion is painted into the end-exhale CT first (it moves on its own).
    Every phase carries its label map (``case_labels.LABELS``), moved by the same true motion as the CT.
    ``indices`` names the phases (default 0, 1, ...).
    """
    body = body_mask(ct, masks)
    lungs = lung_mask(ct, body, masks)
    ct, lesion, lesion_label = _with_lesion(ct, lungs, motion, seed)
    model = BreathingMotion(ct, body, lungs, motion, seed, lesion)
    labels0 = reference_labels(lungs, lesion_label)
    phases = []
    indices = list(range(len(times))) if indices is None else indices
    for index, t in _progress(list(zip(indices, times)), progress, "CT phases"):
        if t == 0:
            phases.append(Phase(index, t, ct, None, {"phase": index, "t": 0.0, "breathing": 0.0}, labels0))
            continue
        truth = _quantize(model.field(t))
        det = jacobian_determinant(truth)
        check_invertible(truth, f"motion field of phase {index}", det=det)
        inverse, residual = _inverse(truth, ct, f"phase {index}")
        info = _phase_info(index, t, truth, det, model) | {"inverse_residual_mm": residual}
        phases.append(Phase(index, t, _pull(ct, inverse), truth, info, phase_labels(labels0, inverse)))
    return phases, model, body, lungs


def _with_lesion(ct: sitk.Image, lungs: sitk.Image, motion: MotionParams, seed: int):
    """(CT, lesion, its label) with the lesion painted in when the motion asks for one, else
    (CT, None, None)."""
    if motion.lesion is None:
        return ct, None, None
    rng = np.random.default_rng([seed, 2])
    lesion = draw_lesion(ct, sitk.GetArrayViewFromImage(lungs).astype(bool), motion.lesion, rng)
    painted, lesion_label = paint_lesion(ct, lesion, motion.lesion, rng)
    return painted, lesion, lesion_label


def _quantize(field: sitk.Image, step_mm: float = 2.0**-10) -> sitk.Image:
    """Round to 1/1024 mm: far below anything measured, and the written fields compress to half."""
    array = np.round(sitk.GetArrayViewFromImage(field) / step_mm) * step_mm
    out = sitk.GetImageFromArray(array, isVector=True)
    out.CopyInformation(field)
    return out


def _inverse(truth: sitk.Image, ct: sitk.Image, what: str) -> tuple[sitk.Image, float]:
    """The truth's inverse and its largest residual in mm (checked, not trusted)."""
    inverse, residual = invert_field(truth)
    if residual > 0.1 * min(ct.GetSpacing()):
        raise RuntimeError(f"inverse of the motion field of {what} is off by {residual:.3f} mm")
    return inverse, residual


def _pull(ct: sitk.Image, inverse: sitk.Image) -> sitk.Image:
    """The phase image: the source pulled through the truth's inverse, so truth maps it back onto the source.

    Cubic B-spline keeps a CT phase nearly as sharp as the source (phase 0).
    """
    transform = sitk.DisplacementFieldTransform(
        sitk.Image(inverse)
    )  # a copy: the transform takes the image's buffer
    moved = sitk.Resample(ct, ct, transform, sitk.sitkBSpline, AIR_HU, sitk.sitkFloat32)
    return sitk.Clamp(moved, sitk.sitkFloat32, AIR_HU, 1e6)


def _phase_info(index: int, t: float, truth: sitk.Image, det: np.ndarray, model: BreathingMotion) -> dict:
    vectors = sitk.GetArrayViewFromImage(truth)
    magnitude = np.sqrt((vectors**2).sum(axis=-1))
    return {
        "phase": index,
        "t": t,
        "breathing": breathing_curve(t, model.params.breathing_exponent),
        "max_displacement_mm": float(magnitude.max()),
        "max_abs_lps_mm": [float(v) for v in np.abs(vectors).reshape(-1, 3).max(axis=0)],
        "det_jacobian_min": float(det.min()),
        "det_jacobian_max": float(det.max()),
    }


def simulate_case(
    ct_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    phases: int = 10,
    seed: int = 0,
    params: SimulationParams = SimulationParams(),
    overwrite: bool = False,
    progress: bool = False,
    only: list[int] | None = None,
) -> Path:
    """Write a simulated 4D CT/CBCT case folder (see the module docstring) and return its path.

    ``only`` makes just phase 0 and these phases of the ``phases``-phase cycle (a benchmark needs
    two; each phase still gets its own projection angles).

    The folder is built beside out_dir and renamed into place at the end, so a failure leaves
    nothing behind, and an existing case is replaced only with overwrite=True.
    """
    ct_path, out_dir = Path(ct_path), Path(out_dir)
    if phases < 2:
        raise InputError(f"phases must be at least 2, got {phases}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"output folder {out_dir} is not empty; choose another or allow overwriting")
    source = read_image(ct_path, "CT")
    ct = working_ct(source, params.spacing_mm, params.crop_margin_mm, params.masks)
    log.info("working grid %s voxels at %s mm", ct.GetSize(), ct.GetSpacing())
    indices = sorted({0, *only}) if only else list(range(phases))
    if not all(0 <= k < phases for k in indices):
        raise InputError(f"phases to make {only} are not all in 0..{phases - 1}")
    made, model, body, lungs = make_phases(
        ct, [k / phases for k in indices], seed, params.motion, params.masks, progress, indices
    )
    cbcts, geometries, acquisition = _image_phases(made, model, phases, seed, params, progress)
    fov = acquisition.pop("field_of_view", None)
    if fov is not None:  # a cone beam's truncated field of view: the lungs are scored only where it sees
        lungs = sitk.Cast(sitk.And(lungs, fov), sitk.sitkUInt8)
    if params.air_outside_field_of_view:
        made, cbcts, (body, lungs), fov = as_a_console_writes(made, cbcts, [body, lungs], fov)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-building-", dir=out_dir.parent))
    try:
        _write_case(building, made, cbcts, body, lungs)
        if fov is not None:
            write_image(fov, building / FOV_MASK)
        for phase, geometry in zip(made, geometries):
            write_geometry(geometry, building / geometry_name(phase.index), params.reconstruction)
        description = _describe(ct_path, seed, phases, params, acquisition, model, made, made[0].ct)
        (building / "case.json").write_text(json.dumps(description, indent=2) + "\n")
        _make_readable(building)
        _move_into_place(building, out_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("wrote case %s", out_dir)
    return out_dir


def _progress(items: list, enabled: bool, what: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="phase")


def _write_case(
    folder: Path, phases: list[Phase], cbcts: list[sitk.Image], body: sitk.Image, lungs: sitk.Image
) -> None:
    # HU are written as int16: rounding to 1 HU is far below the CBCT noise, and cases stay small.
    for phase, cbct in zip(phases, cbcts):
        write_image(_as_int16(phase.ct), folder / f"ct_phase{phase.index}.nii.gz")
        write_image(_as_int16(cbct), folder / f"cbct_phase{phase.index}.nii.gz")
        if phase.truth is not None:
            write_displacement_field(phase.truth, folder / f"truth_0_{phase.index}.nii.gz")
        write_labels(folder, phase.index, phase.labels)
    write_image(body, folder / "body_mask.nii.gz")
    write_image(lungs, folder / "lung_mask.nii.gz")


def geometry_name(phase: int) -> str:
    """The file name of a CBCT phase's projection geometry (RTK XML) in a case folder."""
    return f"cbct_phase{phase}_geometry.xml"


def geometry_path(folder: str | os.PathLike, phase: int) -> Path | None:
    """The projection geometry (RTK XML) of a case's CBCT phase; written from case.json for a parallel-beam
    case made before the simulator wrote geometry files. None for a folder that is not a simulated case."""
    path = Path(folder) / geometry_name(phase)
    if not path.is_file():
        if not (Path(folder) / "case.json").is_file():
            return None
        description = json.loads((Path(folder) / "case.json").read_text())
        if description.get("scanner"):
            raise InputError(f"case {folder}: the geometry file {path.name} is missing")
        from rso.simulation.cbct import CBCTParams, phase_geometry

        params = CBCTParams(**(description["cbct"] or {}))
        write_geometry(phase_geometry(phase, description["phases"], params), path)
    return path


def _image_phases(made: list[Phase], model, phases: int, seed: int, params: SimulationParams, progress):
    """Each made phase's CBCT and projection geometry, and the acquisition's description for case.json."""
    if params.scanner is None:  # the parallel-beam projector (scikit-image: imported only when needed)
        from rso.simulation.cbct import CBCTParams, phase_geometry, simulate_cbct

        cbct_params = params.cbct or CBCTParams()
        rng = np.random.default_rng([seed, 1])
        made_progress = _progress(made, progress, "CBCT phases")
        cbcts = [simulate_cbct(p.ct, p.index, phases, cbct_params, rng) for p in made_progress]
        geometries = [phase_geometry(p.index, phases, cbct_params) for p in made]
        return cbcts, geometries, {"cbct": asdict(cbct_params)}
    from rso.simulation.clinical import scanner_preset, simulate_phases

    preset = replace(scanner_preset(params.scanner), reconstruction=params.reconstruction)
    scans = simulate_phases(made[0].ct, model, phases, [p.index for p in made], preset, seed=seed)
    acquisition = {"cbct": None, "scanner": params.scanner, "acquisition": scans[0].acquisition}
    acquisition["phase_scans"] = [scan.info for scan in scans]
    acquisition["field_of_view"] = scanned_field_of_view(made[0].ct, preset)
    acquisition["air_outside_field_of_view"] = params.air_outside_field_of_view
    return [scan.cbct for scan in scans], [scan.geometry for scan in scans], acquisition


def _as_int16(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(sitk.Round(sitk.Clamp(image, sitk.sitkFloat32, -32768, 32767)), sitk.sitkInt16)


def _make_readable(folder: Path) -> None:
    """mkdtemp makes the folder private; a case is ordinary data (umask respected, read without changing
    it: os.umask would widen it for every thread meanwhile)."""
    from rso.core.imageio import current_umask  # (imported here: this helper's only user in the module)

    os.chmod(folder, 0o777 & ~current_umask())


def _move_into_place(building: Path, out_dir: Path) -> None:
    """Rename the finished folder to out_dir; an old case is moved aside first and removed after."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
        os.replace(out_dir, old / "case")
    os.replace(building, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _describe(
    ct_path: Path,
    seed: int,
    phases: int,
    params: SimulationParams,
    acquisition: dict,
    model: BreathingMotion,
    made: list[Phase],
    ct: sitk.Image,
) -> dict:
    return {
        "format": CASE_FORMAT,
        "source": {
            "path": str(ct_path.resolve()),
            "sha256": file_sha256(ct_path) if ct_path.is_file() else None,
        },
        "seed": seed,
        "phases": phases,
        "phases_made": [p.index for p in made],
        "fixed_phase": 0,
        "truth_convention": (
            "ITK displacement field on the fixed (phase 0) grid, LPS mm, fixed point -> moving point"
        ),
        "grid": {
            "size": list(ct.GetSize()),
            "spacing": list(ct.GetSpacing()),
            "origin": list(ct.GetOrigin()),
            "direction": list(ct.GetDirection()),
        },
        "amplitudes_mm": {
            "si": model.case.si_amplitude_mm,
            "ap": model.case.ap_amplitude_mm,
            "lr": model.case.lr_amplitude_mm,
        },
        "motion": model.description(),
        "working_grid": {"spacing_mm": params.spacing_mm, "crop_margin_mm": params.crop_margin_mm},
        "masks": asdict(params.masks),
        **acquisition,
        "phase_info": [p.info for p in made],
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import scipy
    import skimage

    return {
        "rso-registration": __version__,
        "SimpleITK": sitk.Version_VersionString(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
    }
