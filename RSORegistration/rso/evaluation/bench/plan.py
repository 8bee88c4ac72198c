"""The benchmark's plan: which cases, which boxes, which arms, how many iterations.

Everything a run does is in ``BenchPlan``, which is written into every JSON record so that a
number can be traced to its recipe (bench/README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rso.evaluation.demo import EVALUATION_MASK
from rso.evaluation.peers import AntsSettings, ElastixSettings
from rso.options import DEFAULT_PRECISION


RECORD_FORMAT = "rso-bench/1"


TRAINING_ANATOMY = ("cxr", "lung1")


TRAINING_SEEDS = (1, 2, 3, 4)


PAPER_ARM = "rso_full_global"


RSO_ARMS = {"rso_full_global": ("full", "global"), "rso_crop_local": ("crop", "local"),
            "rso_direct_local": ("direct", "local")}


PEER_ARMS = ("elastix_bspline", "elastix_bspline_box_mask", "ants_syn")


ARM_ORDER = ("general", "iso_long", "iso_short", *RSO_ARMS, *PEER_ARMS)


@dataclass(frozen=True)
class CaseSpec:
    """A simulated case of one patient: which CT, which breathing seed, which moving phase."""

    anatomy: str  # a fetch-data key: "cxr", "lung1" or "lung2"
    seed: int
    moving_phase: int  # fixed is always phase 0 (end exhale); 5 is end inhale, 3 mid-inhale

    @property
    def name(self) -> str:
        return f"{self.anatomy}-seed{self.seed}-phase{self.moving_phase}"


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


def labels(plan: BenchPlan) -> dict[str, str]:
    rso = {arm: f"ISO-{plan.iso_short} + RSO-{plan.rso} {mode}/{compose}" for arm, (mode, compose) in RSO_ARMS.items()}
    return {"general": "general model", "iso_long": f"ISO-{plan.iso_long}", "iso_short": f"ISO-{plan.iso_short}",
            **rso, "elastix_bspline": "elastix B-spline", "elastix_bspline_box_mask": "elastix B-spline, box mask",
            "ants_syn": "ANTs SyN"}
