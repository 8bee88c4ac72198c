"""`bench`: the paper's experiment against ground truth, the classical peers, and speed/memory scaling.

One command regenerates every JSON, table and figure of issue 4 (see bench/README.md):

* **The paper's experiment** on simulated CBCT cases (fixed = CBCT phase 0, moving = CBCT phase
  K) with boxes chosen where the residual after ISO-100 is worst (the clinician's stand-in). Per
  (case, box) the arms are: the general model; ISO-500; ISO-100; ISO-100 + RSO-400 in the modes
  full/global (the paper), crop/local and direct/local; and the peers (elastix B-spline, elastix
  restricted to the box by a fixed-image mask, ANTs SyN). ISO-100 is run once per case and each
  RSO arm is undone (bit-exact) before the next, so every RSO arm starts from the same state.
* Every arm is scored by the same function, ``RegistrationSession.metrics``, on the same model
  grid: box TRE against the simulator's truth, box RMSE against the *clean* fixed CT, whole-image
  TRE, the largest change outside box + margin, folding; plus wall seconds and peak memory.
* **Speed**: seconds per iteration and per step for full vs crop vs direct at two grids and two
  box sizes, side by side in one run, and the interactive latency from a box handed to the
  session until the re-warped full-resolution image and difference image exist.

Results go to ``--out`` (default bench/results): one JSON per (case, box, arm) and per speed
measurement, ``summary.json``, ``summary.md`` and ``figures/``. Every JSON records the machine and
library versions.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from . import __version__
from .cli import add_model_arguments, model_config_from, number_list
from .demo import EVALUATION_MASK
from .errors import InputError
from .export import check_output_folder, native_field, warp_native
from .fetch import DATA_FILES, default_cache_dir
from .imageio import write_bytes_atomically
from .losses import LossConfig
from .peers import AntsSettings, ElastixSettings
from .options import DEFAULT_PRECISION
from .session import RegistrationSession, RSOSettings, open_inputs

log = logging.getLogger(__name__)

RECORD_FORMAT = "rso-bench/1"
# The bundled general model is trained on these patients (other breathing seeds) by
# scripts/build_demo_model.py (TRAIN_ANATOMY, TRAIN_SEEDS); lung2 is never seen in training.
TRAINING_ANATOMY = ("cxr", "lung1")
TRAINING_SEEDS = (1, 2, 3, 4)
PAPER_ARM = "rso_full_global"
# RSO arms: (mode, composition). The paper's is first; direct-field changes only the box, so local.
RSO_ARMS = {"rso_full_global": ("full", "global"), "rso_crop_local": ("crop", "local"),
            "rso_direct_local": ("direct", "local")}
PEER_ARMS = ("elastix_bspline", "elastix_bspline_box_mask", "ants_syn")
ARM_ORDER = ("general", "iso_long", "iso_short", *RSO_ARMS, *PEER_ARMS)


# ----------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class CaseSpec:
    """A simulated case of one patient: which CT, which breathing seed, which moving phase."""

    anatomy: str  # a fetch-data key: "cxr", "lung1" or "lung2"
    seed: int
    moving_phase: int  # fixed is always phase 0 (end exhale); 5 is end inhale, 3 mid-inhale

    @property
    def name(self) -> str:
        return f"{self.anatomy}-seed{self.seed}-phase{self.moving_phase}"


# Six cases: every patient, two breathing seeds each, two different moving phases. Seeds 5 and 6
# of cxr/lung1 are not among the training seeds; lung2 seed 0 is the demo case.
PAPER_CASES = (CaseSpec("cxr", 5, 5), CaseSpec("cxr", 6, 3), CaseSpec("lung1", 5, 5), CaseSpec("lung1", 6, 3),
               CaseSpec("lung2", 0, 5), CaseSpec("lung2", 1, 3))


@dataclass(frozen=True)
class BenchPlan:
    """Everything a run does; written into every JSON so that a number can be traced to its recipe."""

    cases: tuple[CaseSpec, ...] = PAPER_CASES
    case_dirs: tuple[str, ...] = ()  # explicit case folders instead of ``cases`` (fixed phase 0)
    moving_phase: int | None = None  # for case_dirs: default phases // 2 (end inhale)
    boxes: int = 2
    box_size_mm: float = 40.0
    iso_long: int = 500
    iso_short: int = 100
    rso: int = 400
    grid: tuple[int, int, int] | None = None  # None: the model's own grid (the demo grid for the bundled one)
    experiment: bool = True
    peers: bool = True
    elastix: ElastixSettings = ElastixSettings()
    ants: AntsSettings = AntsSettings()
    speed: bool = True
    speed_grids: tuple[tuple[int, int, int], ...] = ((64, 128, 128), (128, 256, 256))
    speed_box_sizes_mm: tuple[float, ...] = (32.0, 64.0)
    speed_iterations: int = 5  # per measurement; the first is reported apart (warm-up)
    figures: bool = True
    similarity: str = "mse"
    smoothness: float = 0.01
    seed: int = 0
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    threads: int | None = None  # torch CPU threads; None keeps torch's default (one per core)
    # Where metrics are measured (a case's mask file): the lungs, as in the demo and the model card.
    evaluation_mask: str = EVALUATION_MASK

    @classmethod
    def quick(cls) -> "BenchPlan":
        """One case, one box, few iterations, speed at the smaller grid only: minutes on 2 cores."""
        return cls(cases=(CaseSpec("lung2", 0, 5),), boxes=1, iso_long=50, iso_short=10, rso=40,
                   elastix=ElastixSettings(iterations=100), ants=AntsSettings(reg_iterations=(20, 10, 0)),
                   speed_grids=((64, 128, 128),), speed_iterations=3)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------- machine, memory, time
def machine_info() -> dict:
    """CPU model, cores, memory and GPU: what a reader needs to compare timings."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gb": _memory_gb(), "platform": platform.platform(), "python": platform.python_version(),
            "gpu": None}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _memory_gb() -> float | None:
    try:
        total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                        if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        return None
    return round(total_kb / 2**20, 1)


def library_versions() -> dict:
    """Versions of everything that shapes a number (peers too, when installed)."""
    packages = ("torch", "monai", "SimpleITK", "numpy", "scipy", "scikit-image", "matplotlib", "itk-elastix",
                "itk", "antspyx")
    versions = {"rso-registration": __version__}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux (>= 4.0) lets a process reset its own peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


class Measured:
    """Wall seconds and peak memory of a block.

    Peak resident memory is the process's VmHWM, reset on entry, so each block gets its own peak
    (torch's and ITK's C++ allocations included, which tracemalloc would miss). Where that reset
    is not possible a thread samples the RSS every 10 ms. On CUDA, torch's peak allocation too.
    """

    def __init__(self, device: torch.device | None = None):
        self.cuda = device is not None and device.type == "cuda"
        self.seconds = 0.0
        self.memory: dict = {}

    def __enter__(self) -> "Measured":
        self.rss_before_kb = _status_kb("VmRSS")
        self.hwm = _reset_peak_rss()
        self._samples: list[int] = []
        self._stop = threading.Event()
        if not self.hwm:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            if (rss := _status_kb("VmRSS")) is not None:
                self._samples.append(rss)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self._stop.set()
        if self.hwm:
            peak, method = _status_kb("VmHWM"), "VmHWM (reset per block)"
        else:
            self._sampler.join()
            peak, method = max(self._samples, default=_status_kb("VmRSS") or 0) or None, "RSS sampled every 10 ms"
        mb = lambda kb: round(kb / 1024, 1) if kb is not None else None  # noqa: E731
        self.memory = {"peak_rss_mb": mb(peak), "rss_before_mb": mb(self.rss_before_kb), "method": method}
        if self.cuda:
            self.memory["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def merged_memory(*blocks: Measured) -> dict:
    """The largest peak over several blocks (a pipeline's steps)."""
    peaks = [b.memory for b in blocks if b.memory.get("peak_rss_mb") is not None]
    if not peaks:
        return {}
    merged = dict(max(peaks, key=lambda m: m["peak_rss_mb"]))
    merged["rss_before_mb"] = blocks[0].memory.get("rss_before_mb")
    cuda = [b.memory["cuda_peak_allocated_mb"] for b in blocks if "cuda_peak_allocated_mb" in b.memory]
    if cuda:
        merged["cuda_peak_allocated_mb"] = max(cuda)
    return merged


# ----------------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    """A case folder and the pair taken from it."""

    name: str
    folder: Path
    anatomy: str
    seed: int | None
    moving_phase: int
    fixed_phase: int = 0
    mask: str = EVALUATION_MASK

    def inputs(self) -> dict:
        folder, f, k = self.folder, self.fixed_phase, self.moving_phase
        return open_inputs(folder / f"cbct_phase{f}.nii.gz", folder / f"cbct_phase{k}.nii.gz",
                           folder / f"ct_phase{f}.nii.gz", folder / f"truth_{f}_{k}.nii.gz", folder / self.mask)

    def to_dict(self) -> dict:
        return {"name": self.name, "folder": str(self.folder), "anatomy": self.anatomy, "seed": self.seed,
                "fixed_phase": self.fixed_phase, "moving_phase": self.moving_phase,
                "fixed": f"cbct_phase{self.fixed_phase}", "moving": f"cbct_phase{self.moving_phase}",
                "reference": f"ct_phase{self.fixed_phase} (clean CT)", "evaluation_mask": self.mask,
                # The bundled model saw this patient (with other breathing seeds) in training.
                "training_anatomy": self.anatomy in TRAINING_ANATOMY,
                "training_case": self.anatomy in TRAINING_ANATOMY and self.seed in TRAINING_SEEDS}


def resolve_cases(plan: BenchPlan) -> list[Case]:
    """The plan's cases, simulated once and cached (or the explicit folders it names)."""
    if plan.case_dirs:
        cases = [_case_from_folder(Path(folder), plan.moving_phase) for folder in plan.case_dirs]
    else:
        cases = [_case_from_spec(spec) for spec in plan.cases]
    return [replace(case, mask=plan.evaluation_mask) for case in cases]


def _case_from_folder(folder: Path, moving_phase: int | None) -> Case:
    info = _case_json(folder)
    k = info["phases"] // 2 if moving_phase is None else moving_phase
    _check_phase(folder, info, k)
    source = Path(info.get("source", {}).get("path", "")).name
    anatomy = {d.filename: d.key for d in DATA_FILES}.get(source, "unknown")
    return Case(f"{folder.name}-phase{k}", folder, anatomy, info.get("seed"), k)


def _case_json(folder: Path) -> dict:
    path = folder / "case.json"
    if not path.is_file():
        raise InputError(f"{folder} is not a simulated case (no case.json); make one with rso-registration simulate")
    return json.loads(path.read_text())


def _check_phase(folder: Path, info: dict, phase: int) -> None:
    if not 1 <= phase < info["phases"]:
        raise InputError(f"moving phase {phase} is not in 1..{info['phases'] - 1} for case {folder}")


def _case_from_spec(spec: CaseSpec) -> Case:
    folder = case_folder(spec.anatomy, spec.seed)
    _check_phase(folder, _case_json(folder), spec.moving_phase)
    return Case(spec.name, folder, spec.anatomy, spec.seed, spec.moving_phase)


def case_folder(anatomy: str, seed: int) -> Path:
    """A 10-phase case in the shared case cache, simulated on first use.

    Reuses the demo case (lung2 seed 0) and the cases scripts/build_demo_model.py made (named
    train-*, held-out ones included); otherwise makes bench-<anatomy>-seed<seed>.
    """
    from .demo import DEMO_PATIENT, DEMO_SEED, demo_case
    from .fetch import fetch_data
    from .simulate import simulate_case

    if (anatomy, seed) == (DEMO_PATIENT, DEMO_SEED):
        return demo_case()
    cases = default_cache_dir().parent / "cases"
    for prefix in ("train", "heldout", "bench"):
        folder = cases / f"{prefix}-{anatomy}-seed{seed}"
        if (folder / "case.json").is_file():
            return folder
    sources = fetch_data()
    if anatomy not in sources:
        raise InputError(f"unknown anatomy {anatomy!r}; choose one of {sorted(sources)}")
    folder = cases / f"bench-{anatomy}-seed{seed}"
    log.info("simulating case %s (once; cached in %s)", folder.name, folder)
    return simulate_case(sources[anatomy], folder, phases=10, seed=seed, overwrite=True)


# ------------------------------------------------------------------------------ the model
class Model:
    """One network, copied into every session, so that every arm starts from the same weights."""

    def __init__(self, checkpoint: str | None, config, plan: BenchPlan):
        from .model import build_model

        self.net, self.source = build_model(checkpoint, config)
        self.plan = plan

    def session(self, inputs: dict, grid=None) -> RegistrationSession:
        plan = self.plan
        loss = LossConfig(similarity=plan.similarity, smoothness_weight=plan.smoothness)
        return RegistrationSession(**inputs, net=copy.deepcopy(self.net),
                                   grid_shape=grid or plan.grid or self.net.config.grid, seed=plan.seed,
                                   device=plan.device, precision=plan.precision, loss=loss, model_source=self.source)

    def to_dict(self) -> dict:
        return {"source": self.source, "config": self.net.config.to_dict()}


# ---------------------------------------------------------------------- the paper's experiment
def rewarp(session: RegistrationSession) -> tuple[sitk.Image, sitk.Image]:
    """What the clinician waits for after a step: the full-resolution warped and difference images."""
    warped = warp_native(session.moving, native_field(session), session.fixed)
    return warped, sitk.Subtract(warped, sitk.Cast(session.fixed, sitk.sitkFloat32))


def labels(plan: BenchPlan) -> dict[str, str]:
    rso = {arm: f"ISO-{plan.iso_short} + RSO-{plan.rso} {mode}/{compose}" for arm, (mode, compose) in RSO_ARMS.items()}
    return {"general": "general model", "iso_long": f"ISO-{plan.iso_long}", "iso_short": f"ISO-{plan.iso_short}",
            **rso, "elastix_bspline": "elastix B-spline", "elastix_bspline_box_mask": "elastix B-spline, box mask",
            "ants_syn": "ANTs SyN"}


@dataclass
class ArmResult:
    """One arm on one (case, box): the metrics and what it cost."""

    arm: str
    metrics: dict
    seconds: float  # from the input images to this arm's field (the whole pipeline)
    peak_memory: dict
    step_seconds: float | None = None  # the arm's last step alone (the RSO step, the peer's run)
    latency_seconds: float | None = None  # box handed over -> warped and difference images ready
    export_seconds: float | None = None
    loss: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@dataclass
class CaseRun:
    """The shared state of one case: its inputs, the ISO-long and ISO-short sessions, their timings."""

    case: Case
    inputs: dict
    iso_long: RegistrationSession
    iso_short: RegistrationSession
    timings: dict  # step name -> Measured


def prepare_case(case: Case, model: Model, plan: BenchPlan, progress) -> CaseRun:
    """general -> ISO-long in one session; general -> ISO-short (the RSO arms' start) in another."""
    inputs = case.inputs()
    timings = {}
    long_arm = model.session(inputs)
    with Measured(long_arm.device) as timings["general"]:
        long_arm.general()
    with Measured(long_arm.device) as timings["iso_long"]:
        long_arm.iso(plan.iso_long, progress=progress)
    short_arm = model.session(inputs)
    short_arm.general()
    with Measured(short_arm.device) as timings["iso_short"]:
        short_arm.iso(plan.iso_short, progress=progress)
    return CaseRun(case, inputs, long_arm, short_arm, timings)


def fixed_arms(run: CaseRun, box) -> list[ArmResult]:
    """The arms that do not depend on the box, scored in it: general, ISO-long, ISO-short."""
    session, t = run.iso_short, run.timings
    fields = {"general": session.state_field(1), "iso_long": run.iso_long.field_voxels,
              "iso_short": session.field_voxels}
    cost = {"general": (t["general"],), "iso_long": (t["general"], t["iso_long"]),
            "iso_short": (t["general"], t["iso_short"])}
    steps = {"general": run.iso_long.history[0], "iso_long": run.iso_long.history[1], "iso_short": session.history[1]}
    return [ArmResult(arm, session.metrics(fields[arm], box), sum(m.seconds for m in cost[arm]),
                      merged_memory(*cost[arm]), step_seconds=cost[arm][-1].seconds, loss=steps[arm].loss,
                      settings=steps[arm].params)
            for arm in fields]


def rso_arm(run: CaseRun, box, arm: str, plan: BenchPlan, progress, figure_path: Path | None) -> ArmResult:
    """ISO-short + RSO on the box in one mode, then the re-warp; undone afterwards (bit-exact)."""
    session = run.iso_short
    mode, compose = RSO_ARMS[arm]
    settings = RSOSettings(iterations=plan.rso, mode=mode, compose=compose)
    with Measured(session.device) as step:
        record = session.rso(box, settings, progress=progress)
    with Measured(session.device) as export:
        rewarp(session)
    if figure_path is not None:
        paper_figure(run, box, plan, figure_path)
    session.undo()
    before = (run.timings["general"], run.timings["iso_short"])
    return ArmResult(arm, record.metrics, sum(m.seconds for m in before) + step.seconds,
                     merged_memory(*before, step, export), step_seconds=step.seconds,
                     latency_seconds=step.seconds + export.seconds, export_seconds=export.seconds, loss=record.loss,
                     settings=asdict(settings))


def paper_figure(run: CaseRun, box, plan: BenchPlan, path: Path) -> None:
    """The Fig. 2/3-style figure (figures.comparison_figure), with the demo's rows."""
    from .demo import DemoPlan, comparison_rows
    from .figures import comparison_figure

    demo_plan = DemoPlan(iso_long=plan.iso_long, iso_short=plan.iso_short, rso=plan.rso, box_size_mm=plan.box_size_mm)
    rows = comparison_rows(run.iso_long, run.iso_short, box, demo_plan)
    comparison_figure(run.iso_long, run.iso_short, box, rows, path)


# ------------------------------------------------------------------------------------ the peers
def peer_field_voxels(session: RegistrationSession, field_image: sitk.Image) -> np.ndarray:
    """A peer's LPS-mm field on the model grid, in the session's voxel units: scored like every arm."""
    return session.grid.mm_to_voxels(session.grid.resample_field(field_image))


def whole_image_peers(run: CaseRun, plan: BenchPlan) -> dict[str, tuple]:
    """elastix B-spline and ANTs SyN on the whole pair, once per case: arm -> (voxels, Measured, PeerResult)."""
    from . import peers

    results = {}
    for arm, package, method in (("elastix_bspline", "elastix", lambda f, m: peers.elastix_bspline(f, m, plan.elastix)),
                                 ("ants_syn", "ants", lambda f, m: peers.ants_syn(f, m, plan.ants))):
        if not peers.available(package):
            log.warning("%s skipped: %s is not installed (%s)", arm, peers.PACKAGES[package], peers.INSTALL_HINT)
            continue
        peers.warm_up(package)
        results[arm] = _run_peer(run, method)
    return results


def _run_peer(run: CaseRun, method) -> tuple:
    with Measured() as cost:
        result = method(run.inputs["fixed"], run.inputs["moving"])
    return peer_field_voxels(run.iso_short, result.field), cost, result


def masked_peer(run: CaseRun, box, plan: BenchPlan) -> tuple | None:
    from . import peers

    if not peers.available("elastix"):
        return None
    peers.warm_up("elastix")
    return _run_peer(run, lambda f, m: peers.elastix_bspline(f, m, plan.elastix, box=box))


def peer_arm(run: CaseRun, box, arm: str, outcome: tuple) -> ArmResult:
    field_voxels, cost, result = outcome
    settings = result.settings | ({"notes": result.extra} if result.extra else {})
    return ArmResult(arm, run.iso_short.metrics(field_voxels, box), cost.seconds, cost.memory,
                     step_seconds=cost.seconds, settings=settings)


# ------------------------------------------------------------------------------- the experiment
def run_case(case: Case, model: Model, plan: BenchPlan, out: Path, context: dict, progress) -> list[dict]:
    """Every arm on every box of one case; returns the records (also written as JSON)."""
    from .boxes import worst_residual_boxes

    log.info("case %s: %s <- %s", case.name, f"cbct_phase{case.fixed_phase}", f"cbct_phase{case.moving_phase}")
    run = prepare_case(case, model, plan, progress)
    boxes = worst_residual_boxes(run.iso_short, plan.boxes, plan.box_size_mm)
    if not boxes:
        raise InputError(f"no {plan.box_size_mm} mm box fits inside the body of case {case.name}")
    whole_peers = whole_image_peers(run, plan) if plan.peers else {}
    records = []
    for index, box in enumerate(boxes):
        results = fixed_arms(run, box)
        for arm in RSO_ARMS:
            with_figure = plan.figures and index == 0 and arm == PAPER_ARM
            figure = out / "figures" / f"case_{case.name}.png" if with_figure else None
            results.append(rso_arm(run, box, arm, plan, progress, figure))
        if plan.peers:
            masked = masked_peer(run, box, plan)
            outcomes = {**whole_peers, **({"elastix_bspline_box_mask": masked} if masked else {})}
            results += [peer_arm(run, box, arm, outcomes[arm]) for arm in PEER_ARMS if arm in outcomes]
        box_info = {"index": index, "size_mm": plan.box_size_mm, "ras": box.ras_corners, "voxels": box.voxels.to_dict()}
        for result in results:
            records.append(write_arm_record(out, case, box_info, result, plan, context))
    return records


def write_arm_record(out: Path, case: Case, box_info: dict, result: ArmResult, plan: BenchPlan, context: dict) -> dict:
    record = {"format": RECORD_FORMAT, "kind": "arm", "case": case.to_dict(), "box": box_info, "arm": result.arm,
              "label": labels(plan)[result.arm], **asdict(result), **context}
    write_json(out / f"arm_{case.name}_box{box_info['index']}_{result.arm}.json", record)
    return record


def write_json(path: Path, data: dict) -> Path:
    return write_bytes_atomically(json.dumps(data, indent=1).encode(), path)


# ------------------------------------------------------------------------------------ speed
def speed_section(case: Case, model: Model, plan: BenchPlan, out: Path, context: dict) -> list[dict]:
    """full vs crop vs direct at each grid and box size, side by side in one process."""
    inputs = case.inputs()
    records = []
    for grid in plan.speed_grids:
        session = model.session(inputs, grid=tuple(grid))
        with Measured(session.device) as forward:
            session.general()
        for size in plan.speed_box_sizes_mm:
            box = _speed_box(session, size)
            if box is None:
                continue
            for arm, (mode, compose) in RSO_ARMS.items():
                # The run's context first: this record's own grid replaces the experiment's.
                record = {**context, "format": RECORD_FORMAT, "kind": "speed", "case": case.to_dict(),
                          "grid": list(grid), "box_size_mm": size, "box_voxels": list(box.voxels.shape), "arm": arm,
                          "forward_seconds": forward.seconds, **speed_measurement(session, box, mode, compose, plan)}
                name = f"speed_{'x'.join(map(str, grid))}_box{size:g}mm_{mode}.json"
                records.append(record)
                write_json(out / name, record)
    return records


def _speed_box(session: RegistrationSession, size_mm: float):
    from .boxes import worst_residual_boxes

    try:
        boxes = worst_residual_boxes(session, 1, size_mm)
    except InputError as exc:
        log.warning("speed: %s mm box skipped at grid %s: %s", size_mm, session.grid.shape, exc)
        return None
    return boxes[0] if boxes else None


def speed_measurement(session: RegistrationSession, box, mode: str, compose: str, plan: BenchPlan) -> dict:
    """Seconds per iteration (median after the first), per step, and the projected paper-length step."""
    from .optimize import crop_window

    elapsed: list[float] = []
    settings = RSOSettings(iterations=plan.speed_iterations, mode=mode, compose=compose)
    with Measured(session.device) as call:
        record = session.rso(box, settings, progress=lambda update: elapsed.append(update.elapsed))
    with Measured(session.device) as export:
        rewarp(session)
    session.undo()
    per_iteration = np.diff([0.0, *elapsed])
    steady = per_iteration[1:] if len(per_iteration) > 1 else per_iteration
    overhead = record.seconds - float(per_iteration.sum())  # copies, final prediction, composition
    metrics_seconds = call.seconds - record.seconds
    projected = overhead + plan.rso * float(np.median(steady))
    margin = session.blend_margin_voxels(settings.blend_margin_mm)
    window = None if mode == "full" else crop_window(box.voxels, session.field_voxels, session.grid.shape, margin)
    return {"mode": mode, "compose": compose, "iterations": plan.speed_iterations,
            "seconds_per_iteration": float(np.median(steady)), "first_iteration_seconds": float(per_iteration[0]),
            "step_seconds": record.seconds, "metrics_seconds": metrics_seconds, "export_seconds": export.seconds,
            "overhead_seconds": overhead, "projected_iterations": plan.rso, "projected_step_seconds": projected,
            "projected_latency_seconds": projected + metrics_seconds + export.seconds,
            "window_voxels": list(window.shape) if window else list(session.grid.shape),
            "peak_memory": merged_memory(call, export)}


# ---------------------------------------------------------------------------------- summary
def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _box_tre(record: dict) -> float | None:
    return (record["metrics"].get("tre_mm_box") or {}).get("mean")


def per_arm_table(records: list[dict]) -> list[dict]:
    rows = []
    for arm in ARM_ORDER:
        mine = [r for r in records if r["arm"] == arm]
        if not mine:
            continue
        get = lambda key, sub=None: [_metric(r, key, sub) for r in mine]  # noqa: E731
        outside = [v for v in get("outside_change_mm") if v is not None]
        rows.append({
            "arm": arm, "label": mine[0]["label"], "n": len(mine),
            "box_tre_mean_mm": _median(get("tre_mm_box", "mean")), "box_tre_p95_mm": _median(get("tre_mm_box", "p95")),
            "box_rmse_hu": _median(get("rmse_hu_box")), "tre_mean_mm": _median(get("tre_mm", "mean")),
            "outside_change_max_mm": max(outside) if outside else None,
            "folding_fraction": _median(get("folding_fraction")),
            "seconds": _median(r["seconds"] for r in mine),
            "step_seconds": _median(r.get("step_seconds") for r in mine),
            "latency_seconds": _median(r.get("latency_seconds") for r in mine),
            "peak_rss_mb": _median(r["peak_memory"].get("peak_rss_mb") for r in mine),
        })
    return rows


def _metric(record: dict, key: str, sub: str | None = None):
    value = record["metrics"].get(key)
    return (value or {}).get(sub) if sub else value


def paired(records: list[dict], arm: str, other: str) -> list[tuple[dict, dict]]:
    """(arm, other) records of the same (case, box)."""
    index = {(r["case"]["name"], r["box"]["index"]): r for r in records if r["arm"] == other}
    return [(r, index[key]) for r in records if r["arm"] == arm
            and (key := (r["case"]["name"], r["box"]["index"])) in index]


def versus(records: list[dict], arm: str, baseline: str) -> dict | None:
    """How often ``arm`` has the lower box TRE than ``baseline``, and the median relative reduction."""
    pairs = [(_box_tre(a), _box_tre(b)) for a, b in paired(records, arm, baseline)]
    pairs = [(a, b) for a, b in pairs if a is not None and b]
    if not pairs:
        return None
    return {"arm": arm, "baseline": baseline, "pairs": len(pairs),
            "win_fraction": float(np.mean([a < b for a, b in pairs])),
            "median_box_tre_reduction": float(np.median([1 - a / b for a, b in pairs]))}


def mode_ratio(records: list[dict], arm: str) -> dict | None:
    """RSO step speed-up over full/global and the box-TRE ratio to it, per (case, box), medians."""
    pairs = paired(records, arm, PAPER_ARM)
    if not pairs:
        return None
    return {"arm": arm, "pairs": len(pairs),
            "step_speedup_vs_full": _median(b["step_seconds"] / a["step_seconds"] for a, b in pairs),
            "box_tre_ratio_to_full": _median(_box_tre(a) / _box_tre(b) for a, b in pairs if _box_tre(b))}


def speed_table(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        full = next((s for s in records if s["grid"] == r["grid"] and s["box_size_mm"] == r["box_size_mm"]
                     and s["mode"] == "full"), None)
        rows.append({"grid": "x".join(map(str, r["grid"])), "box_mm": r["box_size_mm"], "mode": r["mode"],
                     "window": "x".join(map(str, r["window_voxels"])), "s_per_iter": r["seconds_per_iteration"],
                     "speedup_vs_full": full["seconds_per_iteration"] / r["seconds_per_iteration"] if full else None,
                     f"step_{r['projected_iterations']}_s": r["projected_step_seconds"],
                     "latency_s": r["projected_latency_seconds"], "export_s": r["export_seconds"],
                     "peak_rss_mb": r["peak_memory"].get("peak_rss_mb")})
    return rows


def targets(records: list[dict], summary: dict) -> list[dict]:
    """Issue 4's targets, each with the measured value and whether it is met."""
    rows = []
    paper = summary["versus_iso_long"].get(PAPER_ARM)
    if paper:
        rows.append(_target("ISO+RSO beats ISO-long in box TRE on >= 80 % of (case, box)",
                            paper["win_fraction"], 0.8, ">="))
        rows.append(_target("median box-TRE reduction vs ISO-long >= 30 %",
                            paper["median_box_tre_reduction"], 0.3, ">="))
    crop = summary["modes"].get("rso_crop_local")
    if crop:
        rows.append(_target("crop >= 10x faster per RSO step than full", crop["step_speedup_vs_full"], 10, ">="))
        rows.append(_target("crop box TRE within 5 % of full", crop["box_tre_ratio_to_full"], 1.05, "<="))
    local = [r["metrics"]["outside_change_mm"] for r in records if r["arm"] in ("rso_crop_local", "rso_direct_local")]
    if local:
        rows.append(_target("local moves the field outside box + margin by 0.000 mm", max(local), 0.0005, "<"))
    default = next((r for r in summary["arms"] if r["arm"] == default_arm()), None)
    if default and default["latency_seconds"] is not None:
        rows.append(_target(f"interactive latency of the default mode ({default_arm()}) <= 10 s",
                            default["latency_seconds"], 10, "<="))
    versus_elastix = default_vs_elastix(records)
    if versus_elastix is not None:
        rows.append(_target("default three-step run faster than elastix at lower box TRE (fraction of boxes)",
                            versus_elastix, 1.0, ">="))
    return rows


def default_arm() -> str:
    """The arm that the engine's default RSOSettings run."""
    return next(arm for arm, (mode, compose) in RSO_ARMS.items()
                if (mode, compose) == (RSOSettings.mode, RSOSettings.compose))


def default_vs_elastix(records: list[dict]) -> float | None:
    pairs = paired(records, default_arm(), "elastix_bspline")
    if not pairs:
        return None
    return float(np.mean([a["seconds"] < b["seconds"] and _box_tre(a) < _box_tre(b) for a, b in pairs]))


def _target(what: str, value, threshold, relation: str) -> dict:
    if value is None:
        return {"target": what, "measured": None, "threshold": f"{relation} {threshold}", "met": None}
    met = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[relation]
    return {"target": what, "measured": value, "threshold": f"{relation} {threshold}", "met": bool(met)}


def summarise(arm_records: list[dict], speed_records: list[dict], context: dict) -> dict:
    modes = {arm: mode_ratio(arm_records, arm) for arm in RSO_ARMS if arm != PAPER_ARM}
    summary = {
        "format": RECORD_FORMAT, "kind": "summary",
        "cases": sorted({r["case"]["name"] for r in arm_records}),
        "arms": per_arm_table(arm_records),
        "versus_iso_long": {arm: versus(arm_records, arm, "iso_long") for arm in RSO_ARMS},
        "modes": {arm: value for arm, value in modes.items() if value},
        "latency_by_arm": {arm: _median(r.get("latency_seconds") for r in arm_records if r["arm"] == arm)
                           for arm in RSO_ARMS},
        "speed": speed_table(speed_records),
        **context,
    }
    summary["versus_iso_long"] = {k: v for k, v in summary["versus_iso_long"].items() if v}
    summary["targets"] = targets(arm_records, summary)
    return summary


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def summary_markdown(summary: dict) -> str:
    machine, plan = summary["machine"], summary["plan"]
    cores = machine.get("usable_cores", machine["logical_cores"])
    channels = summary["model"]["config"]["channels"]
    cases = ", ".join(summary["cases"]) or "–"
    arms = [{k: v for k, v in row.items() if k != "arm"} for row in summary["arms"]]
    versus_rows = [{"arm": arm, **{k: v for k, v in value.items() if k != "arm"}}
                   for arm, value in summary["versus_iso_long"].items()]
    mode_rows = list(summary["modes"].values())
    latency = [{"arm": arm, "median_latency_s": value} for arm, value in summary["latency_by_arm"].items()]
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    return f"""# Benchmark summary

Run {summary['started']}, {summary['wall_seconds']:.0f} s, on {machine['cpu']} ({cores} cores,
{machine['torch_threads']} torch threads, {machine['memory_gb']} GB{gpu}); device {summary['device']}.
Model: {summary['model']['source']} (channels {channels}), grid {summary['grid']}.
Cases: {cases}; {plan['boxes']} box(es) of {plan['box_size_mm']} mm per case, placed where the
residual after ISO-{plan['iso_short']} is worst. TRE against the simulator's truth, RMSE against the clean fixed CT,
both inside `{plan['evaluation_mask']}` on the model grid; medians over (case, box).

## Per arm (medians over every (case, box))

{markdown_table(arms)}
Seconds are from the input images to the arm's field (general + ISO + RSO for the deep arms);
`step_seconds` is the arm's last step alone; `latency_seconds` is an RSO step plus the full-resolution
re-warp and difference image. `outside_change_max_mm` is the largest field change outside box + blend margin
(relative to the ISO-{plan['iso_short']} field), over all boxes.

## RSO against ISO-{plan['iso_long']} (box TRE, per (case, box))

{markdown_table(versus_rows)}
## Fast modes against full/global (per (case, box), medians)

{markdown_table(mode_rows)}
## Interactive latency in the experiment (box handed over -> warped and difference images ready)

{markdown_table(latency)}
## Speed and memory (side by side, one process)

{markdown_table(summary['speed'])}
`s_per_iter` is the median after the first (warm-up) iteration of {plan['speed_iterations']};
`step_{plan['rso']}_s` projects a {plan['rso']}-iteration step from it plus the measured fixed overhead; `latency_s`
adds the metrics and the full-resolution re-warp. `window` is the sub-volume fed to the network (the whole grid
in full mode).

## Targets (issue 4)

{markdown_table(summary['targets'])}
## Versions

{markdown_table([summary['versions']])}"""


def summary_plot(records: list[dict], path: Path) -> Path | None:
    """Box TRE per arm across all boxes: one dot per (case, box), a line joining each box's arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [arm for arm in ARM_ORDER if any(r["arm"] == arm for r in records)]
    if not arms:
        return None
    keys = sorted({(r["case"]["name"], r["box"]["index"]) for r in records})
    values = {(r["case"]["name"], r["box"]["index"], r["arm"]): _box_tre(r) for r in records}
    figure, ax = plt.subplots(figsize=(1.3 * len(arms) + 3, 5))
    for key in keys:
        ys = [values.get((*key, arm)) for arm in arms]
        ax.plot(range(len(arms)), [np.nan if y is None else y for y in ys], "-o", color="0.6", alpha=0.6, markersize=4)
    medians = [_median(values.get((*key, arm)) for key in keys) for arm in arms]
    ax.plot(range(len(arms)), [np.nan if m is None else m for m in medians], "s", color="crimson", markersize=9,
            label="median")
    ax.set_xticks(range(len(arms)))
    names = [next(r["label"] for r in records if r["arm"] == arm) for arm in arms]
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("box TRE, mean (mm)")
    ax.set_title(f"Box TRE per arm: {len(keys)} (case, box) pairs")
    ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


# -------------------------------------------------------------------------------------- run
def run_bench(plan: BenchPlan, out: Path, checkpoint: str | None = None, config=None, progress=None) -> dict:
    """The whole benchmark; returns the summary (also written as summary.json and summary.md)."""
    out = check_output_folder(out)
    _clear_previous(out)
    threads = torch.get_num_threads()
    if plan.threads:  # on a shared machine fewer threads than cores avoids OpenMP oversubscription
        torch.set_num_threads(plan.threads)
    try:
        return _run_bench(plan, out, checkpoint, config, progress)
    finally:
        torch.set_num_threads(threads)


def _run_bench(plan: BenchPlan, out: Path, checkpoint: str | None, config, progress) -> dict:
    from .session import resolve_device

    started = time.perf_counter()
    model = Model(checkpoint, config, plan)
    context = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
               "versions": library_versions(), "plan": plan.to_dict(), "model": model.to_dict(),
               "grid": list(plan.grid or model.net.config.grid), "device": str(resolve_device(plan.device))}
    # The speed section uses only the first case: do not simulate the others for it.
    first_only = replace(plan, cases=plan.cases[:1], case_dirs=plan.case_dirs[:1])
    cases = resolve_cases(plan if plan.experiment else first_only)
    arm_records = []
    if plan.experiment:
        for case in cases:
            arm_records += run_case(case, model, plan, out, context, progress)
    speed_records = speed_section(cases[0], model, plan, out, context) if plan.speed else []
    summary = summarise(arm_records, speed_records, context | {"wall_seconds": time.perf_counter() - started})
    write_json(out / "summary.json", summary)
    write_bytes_atomically(summary_markdown(summary).encode(), out / "summary.md")
    if plan.figures and arm_records:
        summary_plot(arm_records, out / "figures" / "box_tre_per_arm.png")
    log.info("benchmark done in %.0f s: %s", summary["wall_seconds"], out / "summary.md")
    return summary


def _clear_previous(out: Path) -> None:
    """Remove a previous run's outputs (only the files this command writes) so no stale record mixes in."""
    patterns = ("arm_*.json", "speed_*.json", "summary.json", "summary.md", "figures/case_*.png",
                "figures/box_tre_per_arm.png")
    for pattern in patterns:
        for path in out.glob(pattern):
            path.unlink()


def plan_from_args(args) -> BenchPlan:
    plan = BenchPlan.quick() if args.quick else BenchPlan()
    keys = ("boxes", "box_size_mm", "iso_long", "iso_short", "rso", "speed_iterations", "moving_phase")
    changes = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.case_dir:
        changes["case_dirs"] = tuple(str(Path(p)) for p in args.case_dir)
    if args.cases is not None:
        available = len(changes.get("case_dirs", plan.case_dirs) or plan.cases)
        if not 1 <= args.cases <= available:
            raise InputError(f"--cases must be 1..{available}")
        if changes.get("case_dirs", plan.case_dirs):
            changes["case_dirs"] = changes.get("case_dirs", plan.case_dirs)[:args.cases]
        changes["cases"] = plan.cases[:args.cases]
    if args.speed_grid:
        changes["speed_grids"] = tuple(tuple(g) for g in args.speed_grid)
    if args.speed_box:
        changes["speed_box_sizes_mm"] = tuple(args.speed_box)
    if args.elastix_iterations is not None:
        changes["elastix"] = replace(plan.elastix, iterations=args.elastix_iterations)
    if args.ants_iterations is not None:
        changes["ants"] = replace(plan.ants, reg_iterations=tuple(args.ants_iterations))
    changes |= {"experiment": not args.speed_only, "speed": not args.no_speed, "peers": not args.no_peers,
                "figures": not args.no_figures, "grid": tuple(args.grid) if args.grid else None,
                "similarity": args.similarity, "smoothness": args.smoothness, "seed": args.seed,
                "device": args.device, "precision": args.precision, "threads": args.threads}
    return replace(plan, **changes)


def run_bench_command(args) -> int:
    from .export import format_table
    from .workflow import step_progress

    if args.model and args.channels:
        raise InputError("--channels describes an untrained network; it cannot be combined with --model")
    plan = plan_from_args(args)
    with step_progress(not args.quiet) as progress:
        summary = run_bench(plan, Path(args.out), args.model, model_config_from(args), progress)
    columns = ("label", "n", "box_tre_mean_mm", "box_tre_p95_mm", "box_rmse_hu", "tre_mean_mm", "seconds")
    print(format_table([{c: row[c] for c in columns} for row in summary["arms"]]))
    print(f"\nwrote {Path(args.out) / 'summary.md'}")
    return 0


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="the paper's experiment on simulated CBCT with ground truth, the classical peers, speed",
        description="General, ISO-500 and ISO-100 + RSO-400 (full, crop, direct) against elastix and ANTs on "
                    "simulated CBCT cases with ground truth, plus speed/memory scaling; writes JSON, summary.md "
                    "and figures (see bench/README.md).")
    parser.add_argument("--out", default="bench/results", help="output folder (default bench/results)")
    parser.add_argument("--quick", action="store_true", help="one case, one box, few iterations, small speed grid")
    parser.add_argument("--cases", type=int, metavar="N", help="only the first N cases of the plan")
    parser.add_argument("--case-dir", action="append", default=[], metavar="DIR",
                        help="a simulated case folder to use instead of the plan's cases (repeatable)")
    parser.add_argument("--moving-phase", type=int, metavar="K", help="moving phase for --case-dir (default phases/2)")
    parser.add_argument("--boxes", type=int, metavar="N", help="boxes per case (default 2; quick 1)")
    parser.add_argument("--box-size", dest="box_size_mm", type=float, metavar="MM", help="box side (default 40 mm)")
    parser.add_argument("--iso-long", type=int, metavar="N", help="the ISO-only arm's iterations (default 500)")
    parser.add_argument("--iso-short", type=int, metavar="N", help="ISO before RSO (default 100)")
    parser.add_argument("--rso", type=int, metavar="N", help="RSO iterations per box (default 400)")
    parser.add_argument("--no-peers", action="store_true", help="skip elastix and ANTs")
    parser.add_argument("--elastix-iterations", type=int, metavar="N", help="elastix iterations per resolution")
    parser.add_argument("--ants-iterations", type=lambda t: tuple(int(v) for v in t.split(",")), metavar="A,B,C",
                        help="ANTs SyN iterations per level (default 40,20,0)")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--speed-only", action="store_true", help="only the speed section")
    speed.add_argument("--no-speed", action="store_true", help="skip the speed section")
    parser.add_argument("--speed-grid", type=number_list(3, int), action="append", metavar="Z,Y,X",
                        help="speed grid (repeatable; default 64,128,128 and 128,256,256)")
    parser.add_argument("--speed-box", type=float, action="append", metavar="MM",
                        help="speed box side (repeatable; default 32 and 64)")
    parser.add_argument("--speed-iterations", type=int, metavar="N", help="iterations per speed measurement")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: torch's, one per core); use fewer when other jobs "
                        "share the cores")
    add_model_arguments(parser)
    parser.set_defaults(func=run_bench_command)
