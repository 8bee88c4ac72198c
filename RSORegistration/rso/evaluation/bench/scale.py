"""Scale: one case at several isotropic resolutions, each resolution x arithmetic in a fresh process.

What a clinician's session costs as the images get finer: per stage (read the inputs and start the
session, general, ISO, the viewer's whole images after it, one native RSO step on a box, the viewer's
window after that step (rso.service.viewer_files), the default results) the wall seconds, the process's
peak resident memory after the stage and the bytes the stage wrote. Peak RSS (``ru_maxrss``) only ever
grows, so every (spacing, precision) runs in a process of its own (``python -m
rso.evaluation.bench.scale``: a job as JSON on stdin, one JSON line back on stdout); the peak after a
stage is then the session's own. The case is resampled to each spacing once (images linear, the
evaluation mask nearest) into a cache under the output folder; the projection geometries are physical and
carry over unchanged. With ``extent_mm`` every spacing covers that box around the case's centre (air
beyond the scan), so that the voxel count at 1 mm is that of a clinical reconstruction (485 x 360 x 282
mm: 49 M voxels). Like a clinician's session, a run has no truth: only the metrics mask. Its RSO step
refines the box (no return to an earlier state) and is kept whatever the guard's verdict (``min_gain`` 0
and no second opinion, the verdict recorded), so that a refinement and the viewer's window after it are
measured. Each run's session and result folders are measured and then removed, and every file's size is in
the JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.imageio import write_bytes_atomically, write_image
from rso.errors import InputError
from rso.evaluation.bench.measure import StageMeter, file_sizes, peak_rss_bytes, tree_bytes
from rso.options import DEFAULT_ISO_ITERATIONS
from rso.settings import EngineSettings, PairInputs

log = logging.getLogger(__name__)

SCALE_FORMAT = 1
DEFAULT_SPACINGS = (2.5, 1.5, 1.0, 0.8)  # mm, isotropic
DEFAULT_SCALE_ISO = DEFAULT_ISO_ITERATIONS  # the paper's ISO before RSO
SCALE_PRECISIONS = ("fp32", "bf16")
BOX_SIZE_MM = 40.0
DEMO_BOX_RAS = (51.0, 63.0, -317.0, 91.0, 104.0, -279.0)  # the demo's box (docs, screenshots)
# The stages in the order they run; "whole run" is general + ISO + one box.
STAGES = ("start", "folder", "general", "iso", "viewer", "rso", "overlay", "results")
WHOLE_RUN = ("general", "iso", "rso")
BOX_TO_OVERLAY = ("rso", "overlay")  # a drawn box to its re-warped native overlay (the engine's part)
_INTERPOLATION = {"fixed": "linear", "moving": "linear", "mask": "nearest"}


@dataclass(frozen=True)
class ScaleCase:
    """One pair's files and the box RSO refines: a cube of ``box_size_mm`` at ``box_centre_ras`` (mm)."""

    fixed: str
    moving: str
    box_centre_ras: tuple[float, float, float]
    mask: str | None = None  # where the metrics are measured
    fixed_geometry: str | None = None
    moving_geometry: str | None = None
    box_size_mm: float = BOX_SIZE_MM
    name: str = ""

    def box_ras(self) -> list[float]:
        """[R1, A1, S1, R2, A2, S2] mm."""
        centre, half = np.asarray(self.box_centre_ras, float), self.box_size_mm / 2
        return [float(v) for v in (*(centre - half), *(centre + half))]

    def pair_inputs(self) -> PairInputs:
        return PairInputs(
            fixed=self.fixed,
            moving=self.moving,
            metrics_mask=self.mask,
            fixed_geometry=self.fixed_geometry,
            moving_geometry=self.moving_geometry,
        )


def demo_scale_case() -> ScaleCase:
    """The demo case (rso.evaluation.demo) with the 40 mm cube centred on the demo's box."""
    from rso.evaluation.demo import EVALUATION_MASK, FIXED_PHASE, MOVING_PHASE, demo_case
    from rso.simulation.simulate import geometry_path

    case = demo_case()
    corners = np.asarray(DEMO_BOX_RAS)
    geometries = [geometry_path(case, phase) for phase in (FIXED_PHASE, MOVING_PHASE)]
    return ScaleCase(
        fixed=str(case / f"cbct_phase{FIXED_PHASE}.nii.gz"),
        moving=str(case / f"cbct_phase{MOVING_PHASE}.nii.gz"),
        box_centre_ras=tuple(float(v) for v in (corners[:3] + corners[3:]) / 2),
        mask=str(case / EVALUATION_MASK),
        fixed_geometry=str(geometries[0]) if geometries[0] else None,
        moving_geometry=str(geometries[1]) if geometries[1] else None,
        name=case.name,
    )


@dataclass(frozen=True)
class ScalePlan:
    spacings: tuple[float, ...] = DEFAULT_SPACINGS
    iso: int = DEFAULT_SCALE_ISO  # ISO iterations
    precisions: tuple[str, ...] = SCALE_PRECISIONS
    engine: EngineSettings = field(default_factory=EngineSettings)  # its precision is each run's
    threads: int | None = None  # torch CPU threads in each run (None: torch's default)
    extent_mm: tuple[float, float, float] | None = None  # (x, y, z) box around the centre; None: the case's

    def check(self) -> None:
        if not self.spacings or any(s <= 0 for s in self.spacings):
            raise InputError(f"scale spacings must be > 0 mm; got {list(self.spacings)}")
        if self.extent_mm is not None and (len(self.extent_mm) != 3 or min(self.extent_mm) <= 0):
            raise InputError(f"scale extent must be three lengths > 0 mm (x, y, z); got {self.extent_mm}")
        if self.iso < 0:
            raise InputError("scale ISO iterations must be >= 0")
        unknown = [p for p in self.precisions if p not in SCALE_PRECISIONS]
        if unknown or not self.precisions:
            raise InputError(
                f"scale precisions are {', '.join(SCALE_PRECISIONS)}; got {list(self.precisions)}"
            )


# ------------------------------------------------------------------------------ the parent
def run_scale(case: ScaleCase, out: Path, plan: ScalePlan = ScalePlan()) -> dict:
    """Every (spacing, precision) of ``plan`` in a fresh process; writes ``out``/scale.json and scale.md.

    Returns the record (scale.json's content): the machine, the plan, the case and one run per
    (spacing, precision), coarsest spacing first; a run whose process failed has ``error``.
    """
    from rso.core.model import native_bf16, resolve_device
    from rso.evaluation.bench.measure import library_versions, machine_info

    plan.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {}
    if "bf16" in plan.precisions and not native_bf16(resolve_device(plan.engine.device)):
        skipped["bf16"] = "not native on this device (emulated bf16 would only measure the emulation)"
        log.warning("scale: bf16 skipped: %s", skipped["bf16"])
    runs = []
    for spacing in sorted(plan.spacings, reverse=True):
        resampled = resampled_case(case, spacing, out / "scale_cache", plan.extent_mm)
        for precision in [p for p in plan.precisions if p not in skipped]:
            log.info("scale: %g mm, %s", spacing, precision)
            runs.append(_run_process(resampled, spacing, precision, plan, out / "scale_runs"))
    shutil.rmtree(out / "scale_runs", ignore_errors=True)
    machine = machine_info()
    machine["torch_threads"] = next((r["torch_threads"] for r in runs if "error" not in r), None)
    record = {
        "format": SCALE_FORMAT,
        "kind": "scale",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "versions": library_versions(),
        "case": asdict(case),
        "plan": {**asdict(plan), "engine": plan.engine.to_dict()},
        "stages": list(STAGES),
        "skipped_precisions": skipped,
        "runs": runs,
    }
    record = json.loads(json.dumps(record))  # as scale.json reads back: lists, not tuples
    write_bytes_atomically(json.dumps(record, indent=1).encode(), out / "scale.json")
    write_bytes_atomically((scale_markdown(record) + "\n").encode(), out / "scale.md")
    return record


def _run_process(case: ScaleCase, spacing: float, precision: str, plan: ScalePlan, runs: Path) -> dict:
    """One measurement in a fresh interpreter; its stderr (the log) passes through."""
    import rso

    folder = runs / f"{spacing:g}mm_{precision}"
    shutil.rmtree(folder, ignore_errors=True)
    job = {
        "case": asdict(case),
        "engine": replace(plan.engine, precision=precision).to_dict(),
        "iso": plan.iso,
        "threads": plan.threads,
        "folder": str(folder),
        "log_level": logging.getLogger().getEffectiveLevel(),
    }
    paths = [str(Path(rso.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-m", "rso.evaluation.bench.scale"]
    done = subprocess.run(command, input=json.dumps(job), stdout=subprocess.PIPE, text=True, env=env)
    run = {"spacing_mm": spacing, "precision": precision}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        run["error"] = f"the process exited with {done.returncode}"  # e.g. -9: killed for memory
        log.error("scale: %g mm %s failed: %s", spacing, precision, run["error"])
    else:
        run.update(json.loads(lines[-1]))
    shutil.rmtree(folder, ignore_errors=True)
    return run


# ------------------------------------------------------------------------------ resampling
def resampled_case(case: ScaleCase, spacing: float, cache: Path, extent_mm=None) -> ScaleCase:
    """The case's images at ``spacing`` mm (isotropic; the same physical extent, or ``extent_mm`` around
    its centre), made once in ``cache``.

    The cache folder is named by the sources (paths, sizes, times) and the extent, so a changed case is
    made anew.
    """
    sources = {name: getattr(case, name) for name in _INTERPOLATION if getattr(case, name)}
    stats = {name: Path(path).stat() for name, path in sources.items()}
    stamp = [(n, sources[n], stats[n].st_size, stats[n].st_mtime) for n in sorted(sources)] + [extent_mm]
    key = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:10]
    folder = cache / f"{case.name or 'case'}-{key}" / f"{spacing:g}mm"
    changes = {}
    for name, source in sources.items():
        target = folder / f"{name}.nii.gz"
        if not target.is_file():
            resampled = resample_isotropic(sitk.ReadImage(source), spacing, _INTERPOLATION[name], extent_mm)
            write_image(resampled, target)
        changes[name] = str(target)
    return replace(case, **changes)


def resample_isotropic(image: sitk.Image, spacing: float, interpolation: str, extent_mm=None) -> sitk.Image:
    """``image`` on ``spacing`` mm voxels covering the same physical box (voxel edges), or ``extent_mm``
    (x, y, z) around the same centre; same direction and pixel type; scalars pad with -1000 (air), fields
    and masks with 0."""
    old = np.asarray(image.GetSpacing(), float)
    old_extent = old * np.asarray(image.GetSize())
    extent = old_extent if extent_mm is None else np.asarray(extent_mm, float)
    size = np.maximum(np.round(extent / spacing).astype(int), 1)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    # The first voxel's centre moves by half the change of voxel size (and of extent), so the box stays
    # centred where it was.
    origin = np.asarray(image.GetOrigin(), float) + direction @ (
        (spacing - old) / 2 - (size * spacing - old_extent) / 2
    )
    scalar = image.GetNumberOfComponentsPerPixel() == 1 and interpolation == "linear"
    interpolator = sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    return sitk.Resample(
        image,
        [int(n) for n in size],
        sitk.Transform(),
        interpolator,
        origin.tolist(),
        [float(spacing)] * 3,
        image.GetDirection(),
        -1000.0 if scalar else 0.0,
        image.GetPixelID(),
    )


# ------------------------------------------------------------------------------ the child
def measure_run(job: dict) -> dict:
    """The stages on one case at one spacing and precision, in this process (see the module doc)."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    case = ScaleCase(**{**job["case"], "box_centre_ras": tuple(job["case"]["box_centre_ras"])})
    folder = Path(job["folder"])
    warm_up = _warm_up(case)
    rss_at_start = peak_rss_bytes()  # the interpreter, torch, itk and the engine's modules
    meter = StageMeter(folder)
    session, record, overlay = _run_stages(meter, case, EngineSettings.from_dict(job["engine"]), job)
    return {
        "arithmetic": session.precision,
        "voxels": int(session.fixed.GetNumberOfPixels()),
        "size": list(session.fixed.GetSize()),
        "grid": list(session.grid.shape),
        "box_ras": case.box_ras(),
        "torch_threads": torch.get_num_threads(),
        "rss_at_start_bytes": rss_at_start,
        "warm_up_seconds": warm_up,
        "stages": meter.stages,
        "whole_run_seconds": sum(meter.stages[name]["seconds"] for name in WHOLE_RUN),
        "box_to_overlay_seconds": sum(meter.stages[name]["seconds"] for name in BOX_TO_OVERLAY),
        "overlay_window": (overlay.get("patch") or {}).get("window"),
        "rso": _rso_outcome(session, record),
        "results_files": file_sizes(folder / "results"),
        "results_bytes": tree_bytes(folder / "results"),
        "session_files": file_sizes(folder / "session"),
        "session_bytes": tree_bytes(folder / "session"),
    }


def _warm_up(case: ScaleCase) -> float:
    """Seconds to load RTK (lazily, ~15 s once per process): no part of reading a case."""
    from rso.core.projection.geometry import read_geometry

    start = time.perf_counter()
    if case.fixed_geometry:
        read_geometry(case.fixed_geometry)
    return time.perf_counter() - start


def _run_stages(meter: StageMeter, case: ScaleCase, engine: EngineSettings, job: dict):
    """Start, general, ISO, one native RSO step (kept whatever the guard says) and the results, each
    stage measured by ``meter``. Returns the session, the RSO step's record and its overlay files."""
    from rso.core.inputs import read_inputs
    from rso.core.results import write_results
    from rso.core.workflow import start_session
    from rso.options import DEFAULT_OUTPUTS
    from rso.service.viewer_files import ViewerFiles
    from rso.settings import ISOSettings, RSOSettings

    folder = meter.folder
    with meter.stage("start"):
        session = start_session(engine, read_inputs(case.pair_inputs()))
    with meter.stage("folder"):  # the inputs copied into the session folder
        session.attach_folder(folder / "session")
    with meter.stage("general"):
        session.general()
    with meter.stage("iso"):
        session.iso(ISOSettings(iterations=int(job["iso"])))
    viewer = ViewerFiles()
    with meter.stage("viewer"):  # what every general or ISO step costs the viewer: the whole images
        viewer.after_step(session, session.history[-1], native_step=False)
    box = session.box_from_ras(case.box_ras())
    with meter.stage("rso"):
        record = session.rso(box, RSOSettings.unguarded(returns=False))
    with meter.stage("overlay"):  # the step's window of each viewer image
        overlay = viewer.after_step(session, record, native_step=True)
    with meter.stage("results"):
        write_results(session, folder / "results", figure=False, outputs=DEFAULT_OUTPUTS)
    return session, record, overlay


def _rso_outcome(session, record) -> dict:
    """What the guard said (the step is kept whatever it says), where it returned to, and its native
    window (z, y, x voxels)."""
    outcome = {
        "declined": record.declined,
        "guard_gain": (record.guard or {}).get("gain"),
        "returned_to": (record.guard or {}).get("returned_to"),
        "seconds": record.seconds,
        "window": None,
    }
    patches = session.state.patches if record.accepted else ()
    if patches:
        outcome["window"] = list(patches[-1].grid.shape)
    return outcome


def main() -> int:
    """``python -m rso.evaluation.bench.scale``: a job (JSON) on stdin, one JSON line on stdout."""
    from rso.service.worker import protocol_stream

    stream = protocol_stream()  # C libraries' prints go to stderr, not into the answer
    job = json.loads(sys.stdin.read())
    logging.basicConfig(
        level=job.get("log_level", logging.INFO), format="%(asctime)s %(name)s: %(message)s", datefmt="%X"
    )
    stream.write(json.dumps(measure_run(job)) + "\n")
    stream.flush()
    return 0


# ------------------------------------------------------------------------------ the table
def scale_markdown(record: dict) -> str:
    """The header (case, machine, plan) and one table row per (spacing, precision)."""
    machine, plan = record["machine"], record["plan"]
    lines = [
        f"# Scale: {record['case'].get('name') or record['case']['fixed']}",
        "",
        f"CPU: {machine['cpu']}, {machine['logical_cores']} logical cores, torch threads "
        f"{machine['torch_threads']}; GPU: {machine.get('gpu') or 'none'}; "
        f"device {plan['engine']['device']}.",
        f"Stages: start (read inputs + start session), folder (inputs into the session folder), general, "
        f"ISO-{plan['iso']}, viewer (the whole images after ISO), one native RSO step on a "
        f"{record['case']['box_size_mm']:g} mm box (kept), overlay (the viewer's window after it), results "
        "(default outputs); run = general + ISO + RSO; box = RSO + overlay. RSS: the process's peak after "
        "each stage; warm-up (itk's lazy import) excluded. No truth (as in a clinician's session).",
    ]
    if plan.get("extent_mm"):
        lines.append(f"Every spacing covers {' x '.join(f'{v:g}' for v in plan['extent_mm'])} mm (x, y, z).")
    if record["skipped_precisions"]:
        lines.append(f"Skipped: {record['skipped_precisions']}.")
    return "\n".join([*lines, "", *_table(record["runs"])])


def _table(runs: list[dict]) -> list[str]:
    header = ["mm", "precision", "voxels", *(f"s {s}" for s in STAGES), "s run", "s box"]
    header += [*(f"GB {s}" for s in STAGES), "MB results", "MB session", "RSO x", "run x", "RSO"]
    rows = [header, ["---"] * len(header)]
    for run in runs:
        if "error" in run:
            rows.append([f"{run['spacing_mm']:g}", run["precision"], "failed: " + run["error"]])
            continue
        stages, reference = run["stages"], _reference(runs, run)
        rso_ratio = stages["rso"]["seconds"] / reference["stages"]["rso"]["seconds"]
        run_ratio = run["whole_run_seconds"] / reference["whole_run_seconds"]
        rows.append(
            [f"{run['spacing_mm']:g}", run["arithmetic"], f"{run['voxels']:,}"]
            + [f"{stages[s]['seconds']:.2f}" for s in STAGES]
            + [f"{run['whole_run_seconds']:.2f}", f"{run['box_to_overlay_seconds']:.2f}"]
            + [f"{stages[s]['peak_rss_bytes'] / 1e9:.2f}" for s in STAGES]
            + [f"{run['results_bytes'] / 1e6:.1f}", f"{run['session_bytes'] / 1e6:.1f}"]
            + [f"{rso_ratio:.2f}", f"{run_ratio:.2f}", _rso_word(run["rso"])]
        )
    reference_note = "RSO x, run x: ratios to the coarsest spacing's row of the same precision."
    return ["| " + " | ".join(row) + " |" for row in rows] + ["", reference_note]


def _reference(runs: list[dict], run: dict) -> dict:
    same = [r for r in runs if "error" not in r and r["precision"] == run["precision"]]
    return max(same, key=lambda r: r["spacing_mm"])


def _rso_word(outcome: dict) -> str:
    """How the step ended, and the guard's gain (the step is kept at any gain here)."""
    word = "declined" if outcome["declined"] else "returned" if outcome["returned_to"] is not None else "kept"
    gain = outcome.get("guard_gain")
    return word if gain is None else f"{word} (guard gain {gain:.0%})"


if __name__ == "__main__":
    sys.exit(main())
