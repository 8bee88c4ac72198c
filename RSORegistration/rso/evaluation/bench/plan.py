"""The benchmark's plan: which cases, which boxes, which arms, how many iterations.

Everything a run does is in ``BenchPlan``, which is written into every JSON record so that a
number can be traced to its recipe (bench/README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rso.core.projection.geometry import ProjectionGeometry
from rso.evaluation.case_sets import BENCH_CASES, CaseSpec
from rso.evaluation.demo import EVALUATION_MASK
from rso.evaluation.peers import AntsSettings, ElastixSettings
from rso.evaluation.wrong_geometry import WRONG_GEOMETRIES, wrong_geometries
from rso.options import (
    DEFAULT_PRECISION,
    DEFAULT_RSO_MODE,
    DEFAULT_SIMILARITY,
    DEFAULT_SMOOTHNESS,
    PAPER_RSO_ITERATIONS,
)
from rso.settings import RSOSettings

RECORD_FORMAT = "rso-bench/2"
# The bundled general model is trained on these patients (other breathing seeds) by
# scripts/build_demo_model.py (TRAIN_ANATOMY; TRAIN_SEEDS, then FINE_TUNE_CASES' 33 and 34); lung2 is
# never seen in training, and native RSO's settings were chosen on the training anatomies only.
TRAINING_ANATOMY = ("cxr", "lung1")
TRAINING_SEEDS = (1, 2, 3, 4, 33, 34)
HELD_OUT_ANATOMY = "lung2"

PAPER_ARM = "rso_full_global"
NO_GEOMETRY_ISO_ARM, NO_GEOMETRY_RSO_ARM = "iso_short_no_geometry", "rso_native_no_geometry"
WRONG_GEOMETRY_ISO_ARM, WRONG_GEOMETRY_RSO_ARM = "iso_short_wrong_geometry", "rso_native_wrong_geometry"
GENERAL_RSO_ARM = "rso_native_from_general"
# RSO arms: the RSOSettings each runs on top of ISO-short. The paper's (full/global, MSE, its 400
# iterations), the previous default (direct/local) and native RSO at the fixed image's resolution.
RSO_ARMS = {
    "rso_native": {"mode": "native"},
    "rso_direct_local": {"mode": "direct", "compose": "local", "iterations": PAPER_RSO_ITERATIONS},
    PAPER_ARM: {"mode": "full", "compose": "global", "iterations": PAPER_RSO_ITERATIONS},
    # What a user without projections gets: ISO-short and native RSO on a session given no projection
    # geometry, so nothing is artefact-matched (run where the case has geometry files).
    NO_GEOMETRY_RSO_ARM: {"mode": "native"},
    # What a user whose moving geometry file is slightly off gets: the same on a session whose moving image
    # has a wrong geometry, one perturbation per case in turn (wrong_geometry_for; the record names it).
    WRONG_GEOMETRY_RSO_ARM: {"mode": "native"},
    # Native RSO straight from the general model, ISO never run: whether ISO earns its place before RSO.
    GENERAL_RSO_ARM: {"mode": "native"},
}
# The arm each RSO arm of another path starts from (the rest start from "iso_short").
START_OF = {
    NO_GEOMETRY_RSO_ARM: NO_GEOMETRY_ISO_ARM,
    WRONG_GEOMETRY_RSO_ARM: WRONG_GEOMETRY_ISO_ARM,
    GENERAL_RSO_ARM: "general",
}
PEER_ARMS = ("elastix_bspline", "elastix_bspline_box_mask", "ants_syn")
ARM_ORDER = (
    "general",
    "iso_long",
    "iso_short",
    NO_GEOMETRY_ISO_ARM,
    WRONG_GEOMETRY_ISO_ARM,
    *RSO_ARMS,
    *PEER_ARMS,
)
# The box kinds and how many boxes of each per case (rso.evaluation.box_kinds).
BOX_PLAN = (("misaligned", 2), ("residual", 1), ("control", 2))


@dataclass(frozen=True)
class BenchPlan:
    """Everything a run does; written into every JSON so that a number can be traced to its recipe."""

    cases: tuple[CaseSpec, ...] = BENCH_CASES
    case_dirs: tuple[str, ...] = ()  # explicit case folders instead of ``cases`` (fixed phase 0)
    moving_phase: int | None = None  # for case_dirs: default phases // 2 (end inhale)
    boxes: tuple[tuple[str, int], ...] = BOX_PLAN
    # The costly arms (the paper's RSO, box-masked elastix) run on these kinds only: the boxes a
    # clinician would draw, where the paper's claim is tested.
    costly_kinds: tuple[str, ...] = ("misaligned",)
    box_size_mm: float = 40.0
    iso_long: int = 500
    iso_short: int = 100
    rso: int = PAPER_RSO_ITERATIONS  # the network modes' iterations; native RSO uses its own default
    grid: tuple[int, int, int] | None = None  # None: the model's own grid (the demo grid for the bundled one)
    experiment: bool = True
    paper_arm: bool = True  # the paper's RSO-400 full/global: half a cone-beam run's time
    # ISO-short and native RSO with the moving image's geometry slightly wrong (where the case has geometry)
    wrong_geometry: bool = True
    peers: bool = True
    elastix: ElastixSettings = ElastixSettings()
    ants: AntsSettings = AntsSettings()
    speed: bool = True
    speed_grids: tuple[tuple[int, int, int], ...] = ((48, 80, 80), (96, 160, 160))
    speed_precisions: tuple[str, ...] = ("fp32", "bf16")
    speed_box_sizes_mm: tuple[float, ...] = (32.0, 64.0)
    speed_iterations: int = 5  # per measurement; the first is reported apart (warm-up)
    figures: bool = True
    contours: bool = True  # Dice and HD95 of the simulator's labels carried by each arm (bench/contours.py)
    similarity: str = DEFAULT_SIMILARITY
    smoothness: float = DEFAULT_SMOOTHNESS
    seed: int = 0
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    threads: int | None = None  # torch CPU threads; None keeps torch's default (one per core)
    # Where metrics are measured (a case's mask file): the lungs, as in the demo and the model card.
    evaluation_mask: str = EVALUATION_MASK
    # A case file every path fits inside (register's ``--fit-mask``), e.g. the scan's field of view
    # (``fov_mask.nii.gz``: ``bench --fit-field-of-view``, the images limited to what the scanner saw); None:
    # the whole images.
    fit_mask: str | None = None

    @classmethod
    def quick(cls) -> BenchPlan:
        """One case, a misaligned and a control box, few iterations, one speed grid: minutes on 2 cores."""
        return cls(
            cases=(CaseSpec("lung2", 0, 5, "local"),),
            boxes=(("misaligned", 1), ("control", 1)),
            iso_long=50,
            iso_short=10,
            rso=40,
            elastix=ElastixSettings(iterations=100),
            ants=AntsSettings(reg_iterations=(20, 10, 0)),
            speed_grids=((48, 80, 80),),
            speed_iterations=3,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def rso_settings(arm: str, plan: BenchPlan) -> RSOSettings:
    """The RSOSettings of an RSO arm under this plan (the network modes take the plan's iteration count)."""
    settings = dict(RSO_ARMS[arm])
    if "iterations" in settings:
        settings["iterations"] = plan.rso
    return RSOSettings(**settings)


def default_arm() -> str:
    """The arm that the engine's default RSOSettings run."""
    return next(arm for arm, settings in RSO_ARMS.items() if settings["mode"] == DEFAULT_RSO_MODE)


def labels(plan: BenchPlan) -> dict[str, str]:
    rso = {}
    for arm in RSO_ARMS:
        settings = rso_settings(arm, plan)
        compose = "" if settings.mode == "native" else f"/{settings.compose}"
        rso[arm] = f"ISO-{plan.iso_short} + RSO-{settings.iterations} {settings.mode}{compose}"
    rso[NO_GEOMETRY_RSO_ARM] += ", no geometry"
    rso[WRONG_GEOMETRY_RSO_ARM] += ", wrong geometry"
    rso[GENERAL_RSO_ARM] = rso[GENERAL_RSO_ARM].replace(f"ISO-{plan.iso_short}", "general model", 1)
    return {
        "general": "general model",
        "iso_long": f"ISO-{plan.iso_long}",
        "iso_short": f"ISO-{plan.iso_short}",
        NO_GEOMETRY_ISO_ARM: f"ISO-{plan.iso_short}, no geometry",
        WRONG_GEOMETRY_ISO_ARM: f"ISO-{plan.iso_short}, wrong geometry",
        **rso,
        "elastix_bspline": "elastix B-spline",
        "elastix_bspline_box_mask": "elastix B-spline, box mask",
        "ants_syn": "ANTs SyN",
    }


def wrong_geometry_for(position: int, geometry: ProjectionGeometry) -> tuple[str, ProjectionGeometry] | None:
    """The wrong moving geometry of the case at ``position`` in the plan's case list: the perturbations of
    rso.evaluation.wrong_geometry in turn (position modulo 3), so that six cases get each twice. None where
    the perturbation does not apply (no cluster to remove from evenly spread views)."""
    name = WRONG_GEOMETRIES[position % len(WRONG_GEOMETRIES)]
    wrong = wrong_geometries(geometry).get(name)
    return (name, wrong) if wrong is not None else None


def wrong_geometry_label(label: str, perturbation: str) -> str:
    """An arm's label with the perturbation its case got: "ISO-100, wrong geometry (angles +0.5 deg)"."""
    return f"{label} ({perturbation})"
