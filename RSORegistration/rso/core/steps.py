"""What a step is: the RSO settings a user chooses, and the record of a step once it ran.

Defaults live in ``rso.options``. RSO has four modes: ``native`` refines a smooth correction of
the field at the fixed image's own resolution inside the box (``rso.core.native``); ``direct``
optimises the model-grid field in the box; ``crop`` and ``full`` fine-tune the network's weights
on a window around the box or on the whole image (the paper).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from rso.core.boxes import RegionBox
from rso.errors import InputError
from rso.options import (
    COMPOSITIONS,
    DEFAULT_BLEND_MARGIN_MM,
    DEFAULT_COMPOSITION,
    DEFAULT_NATIVE_ITERATIONS,
    DEFAULT_RSO_CONTROL_SPACING_MM,
    DEFAULT_RSO_EARLIER_STARTS,
    DEFAULT_RSO_MATCH_ARTEFACTS,
    DEFAULT_RSO_MIN_GAIN,
    DEFAULT_RSO_MODE,
    DEFAULT_RSO_PRESMOOTH_MM,
    DEFAULT_RSO_SIMILARITY,
    DEFAULT_RSO_SMOOTHNESS,
    DEFAULT_RSO_STEP_MM,
    NATIVE_SIMILARITIES,
    PAPER_LEARNING_RATE,
    PAPER_RSO_ITERATIONS,
    RSO_MODES,
)

FIELD_MODES = ("native", "direct")  # modes that change only the field in the box (the network stays)


@dataclass
class RSOSettings:
    """How an RSO step runs: which mode, how long, how its field is merged, and the native mode's knobs."""

    iterations: int | None = (
        None  # None: the mode's own default (native: a few dozen; network modes: the paper's 400)
    )
    mode: str = DEFAULT_RSO_MODE
    # "global" (the paper) keeps the fine-tuned network's field everywhere, "local" only in the box.
    compose: str = DEFAULT_COMPOSITION
    blend_margin_mm: float = DEFAULT_BLEND_MARGIN_MM
    learning_rate: float = PAPER_LEARNING_RATE  # Adam on the weights (full, crop) or the field (direct)
    similarity: str = DEFAULT_RSO_SIMILARITY  # native: "mind", "lncc" or "mse"
    control_spacing_mm: float = DEFAULT_RSO_CONTROL_SPACING_MM  # native: the correction's control grid
    smoothness: float = DEFAULT_RSO_SMOOTHNESS  # native: diffusion weight on the correction
    step_mm: float = DEFAULT_RSO_STEP_MM  # native: Adam's step on the correction, in mm
    min_gain: float = (
        DEFAULT_RSO_MIN_GAIN  # native: the guard's threshold (0: accept every finite, unfolded step)
    )
    presmooth_mm: float = DEFAULT_RSO_PRESMOOTH_MM  # native: Gaussian sigma on both images before comparing
    earlier_starts: bool = DEFAULT_RSO_EARLIER_STARTS  # native: may return the box to an earlier state
    # native: where both images' projection views are known, compare them artefact-matched
    # (rso.core.projection.matching)
    match_artefacts: bool = DEFAULT_RSO_MATCH_ARTEFACTS

    def __post_init__(self):
        if self.mode not in RSO_MODES:
            raise InputError(f"RSO mode must be one of {RSO_MODES}, not {self.mode!r}")
        if self.compose not in COMPOSITIONS:
            raise InputError(f"composition must be one of {COMPOSITIONS}, not {self.compose!r}")
        if self.mode in FIELD_MODES and self.compose != "local":
            raise InputError(
                f"the {self.mode} mode changes only the box: use composition local, or mode full or "
                "crop for global"
            )
        if self.iterations is None:
            self.iterations = DEFAULT_NATIVE_ITERATIONS if self.mode == "native" else PAPER_RSO_ITERATIONS
        check_iterations(self.iterations)
        if self.similarity not in NATIVE_SIMILARITIES:
            raise InputError(f"RSO similarity must be one of {NATIVE_SIMILARITIES}, not {self.similarity!r}")
        for name in ("blend_margin_mm", "smoothness", "min_gain", "presmooth_mm"):
            if getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', ' ')} must be >= 0")
        for name in ("control_spacing_mm", "step_mm", "learning_rate"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name.replace('_', ' ')} must be > 0")


def check_iterations(iterations: int) -> None:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise InputError(f"iterations must be a whole number >= 0, not {iterations!r}")


@dataclass
class StepRecord:
    """One step: what ran, with which parameters, how the loss went, what it achieved.

    ``declined`` is set when the guard refused an RSO step: the session did not change, and the
    metrics are those of the unchanged field in the box; ``guard`` holds the guard's numbers.
    """

    kind: str  # "general", "iso" or "rso"
    params: dict
    loss: list[float]
    seconds: float
    metrics: dict
    box: RegionBox | None = None
    finished: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    declined: str | None = None
    guard: dict | None = None

    @property
    def accepted(self) -> bool:
        return self.declined is None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["box"] = self.box.to_dict() if self.box else None
        data["box_ras"] = self.box.ras_corners if self.box else None
        data["iterations"] = self.params.get("iterations", 0)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StepRecord:
        box = RegionBox.from_dict(data["box"]) if data.get("box") else None
        return cls(
            data["kind"],
            data["params"],
            data["loss"],
            data["seconds"],
            data["metrics"],
            box,
            data["finished"],
            data.get("declined"),
            data.get("guard"),
        )
