"""The record of a step once it ran (its settings: rso.settings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from rso.core.boxes import Box


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
    box: Box | None = None
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
        box = Box.from_dict(data["box"]) if data.get("box") else None
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
