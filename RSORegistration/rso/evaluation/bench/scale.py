"""Scale: one case at several isotropic resolutions, each resolution x arithmetic in a fresh process.

What a clinician's session costs as the images get finer: per stage (read the inputs and start the
session, general, ISO, one native RSO step on a box, the viewer's update after it, the default
results) the wall seconds, the process's peak resident memory after the stage and the bytes the
stage wrote. Peak RSS (``ru_maxrss``) only ever grows, so every (spacing, precision) runs in a process
of its own (``python -m rso.evaluation.bench.scale``: a job as JSON on stdin, one JSON line back on
stdout); the peak after a stage is then the session's own. The case is resampled to each spacing once
(images and truth linear, the evaluation mask nearest) into a cache under the output folder; the
projection geometries are physical and carry over unchanged. Each run's session and result folders
are measured and then removed: at 0.8 mm they take gigabytes, and every file's size is in the JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.imageio import write_bytes_atomically, write_image
from rso.errors import InputError
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
STAGES = ("start", "folder", "general", "iso", "rso", "viewer", "results")
WHOLE_RUN = ("general", "iso", "rso")
_INTERPOLATION = {"fixed": "linear", "moving": "linear", "truth": "linear", "mask": "nearest"}


@dataclass(frozen=True)
class ScaleCase:
    """One pair's files and the box RSO refines: a cube of ``box_size_mm`` at ``box_centre_ras`` (mm)."""

    fixed: str
    moving: str
    box_centre_ras: tuple[float, float, float]
    truth: str | None = None
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
            truth=self.truth,
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
        truth=str(case / f"truth_{FIXED_PHASE}_{MOVING_PHASE}.nii.gz"),
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

    def check(self) -> None:
        if not self.spacings or any(s <= 0 for s in self.spacings):
            raise InputError(f"scale spacings must be > 0 mm; got {list(self.spacings)}")
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
        resampled = resampled_case(case, spacing, out / "scale_cache")
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
def resampled_case(case: ScaleCase, spacing: float, cache: Path) -> ScaleCase:
    """The case's images at ``spacing`` mm (isotropic, the same physical extent), made once in ``cache``.

    The cache folder is named by the sources (paths, sizes, times), so a changed case is made anew.
    """
    sources = {name: getattr(case, name) for name in _INTERPOLATION if getattr(case, name)}
    stamp = [(name, path, *_file_stamp(path)) for name, path in sorted(sources.items())]
    key = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:10]
    folder = cache / f"{case.name or 'case'}-{key}" / f"{spacing:g}mm"
    changes = {}
    for name, source in sources.items():
        target = folder / f"{name}.nii.gz"
        if not target.is_file():
            image = sitk.ReadImage(source)
            write_image(resample_isotropic(image, spacing, _INTERPOLATION[name]), target)
        changes[name] = str(target)
    return replace(case, **changes)


def _file_stamp(path: str) -> tuple[int, float]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime


def resample_isotropic(image: sitk.Image, spacing: float, interpolation: str) -> sitk.Image:
    """``image`` on ``spacing`` mm voxels covering the same physical box (voxel edges), same direction
    and pixel type; scalars pad with -1000 (air), fields and masks with 0."""
    old = np.asarray(image.GetSpacing(), float)
    size = np.maximum(np.round(old * np.asarray(image.GetSize()) / spacing).astype(int), 1)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    # The first voxel's centre moves by half the change of voxel size, so the edges stay where they were.
    origin = np.asarray(image.GetOrigin(), float) + direction @ ((spacing - old) / 2)
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
class StageMeter:
    """Seconds, peak RSS after the stage (ru_maxrss: the process's peak so far) and the bytes that
    appeared under ``folder`` during the stage, per stage."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.stages: dict[str, dict] = {}

    @contextmanager
    def stage(self, name: str):
        import torch

        before, start = tree_bytes(self.folder), time.perf_counter()
        yield
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # CUDA work is asynchronous: the stage ends when the device is done
        seconds = time.perf_counter() - start
        self.stages[name] = {
            "seconds": seconds,
            "peak_rss_bytes": peak_rss_bytes(),
            "bytes_written": tree_bytes(self.folder) - before,
        }
        log.info(
            "scale: %s %.2f s, peak RSS %.2f GB", name, seconds, self.stages[name]["peak_rss_bytes"] / 1e9
        )


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def file_sizes(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (its path relative to the folder) and its bytes."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def tree_bytes(folder: Path) -> int:
    return sum(file_sizes(folder).values())


def measure_run(job: dict) -> dict:
    """The stages on one case at one spacing and precision, in this process (see the module doc)."""
    import torch

    from rso.core.inputs import read_inputs
    from rso.core.projection.geometry import read_geometry
    from rso.core.results import write_results
    from rso.core.workflow import start_session
    from rso.options import DEFAULT_OUTPUTS
    from rso.service.worker import write_current
    from rso.settings import ISOSettings, RSOSettings

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    case = ScaleCase(**{**job["case"], "box_centre_ras": tuple(job["case"]["box_centre_ras"])})
    engine = EngineSettings.from_dict(job["engine"])
    folder = Path(job["folder"])
    warm_up = time.perf_counter()
    if case.fixed_geometry:  # itk loads RTK lazily, ~15 s once per process: no part of reading a case
        read_geometry(case.fixed_geometry)
    warm_up = time.perf_counter() - warm_up
    rss_at_start = peak_rss_bytes()  # the interpreter, torch, itk and the engine's modules
    meter = StageMeter(folder)
    with meter.stage("start"):
        session = start_session(engine, read_inputs(case.pair_inputs()))
    with meter.stage("folder"):  # the inputs copied into the session folder
        session.attach_folder(folder / "session")
    with meter.stage("general"):
        session.general()
    with meter.stage("iso"):
        session.iso(ISOSettings(iterations=int(job["iso"])))
    box = session.box_from_ras(case.box_ras())
    with meter.stage("rso"):
        record = session.rso(box, RSOSettings())
    with meter.stage("viewer"):
        write_current(session)
    with meter.stage("results"):
        write_results(session, folder / "results", figure=False, outputs=DEFAULT_OUTPUTS)
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
        "rso": _rso_outcome(session, record),
        "results_files": file_sizes(folder / "results"),
        "results_bytes": tree_bytes(folder / "results"),
        "session_files": file_sizes(folder / "session"),
        "session_bytes": tree_bytes(folder / "session"),
    }


def _rso_outcome(session, record) -> dict:
    """Whether the step was kept, where it returned to, and its native window (z, y, x voxels)."""
    outcome = {
        "declined": record.declined,
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
        f"ISO-{plan['iso']}, one native RSO step on a {record['case']['box_size_mm']:g} mm box, viewer "
        "(write_current), results (default outputs); run = general + ISO + RSO. RSS: the process's peak "
        "after each stage; warm-up (itk's lazy import) excluded.",
    ]
    if record["skipped_precisions"]:
        lines.append(f"Skipped: {record['skipped_precisions']}.")
    return "\n".join([*lines, "", *_table(record["runs"])])


def _table(runs: list[dict]) -> list[str]:
    header = ["mm", "precision", "voxels", *(f"s {s}" for s in STAGES), "s run"]
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
            + [f"{run['whole_run_seconds']:.2f}"]
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
    if outcome["declined"]:
        return "declined"
    return "returned" if outcome["returned_to"] is not None else "kept"


if __name__ == "__main__":
    sys.exit(main())
