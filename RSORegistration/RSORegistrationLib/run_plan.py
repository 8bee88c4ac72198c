"""One console run (the paper's three steps in one call) as a dataclass: what ``RegistrationLogic.run`` does.

``RunParameters`` (parameters.py) is what the scene's parameter node stores; a run needs more than
that (several regions, whether to block, a timeout, listeners) and changes only the parameters it
names, so the plan keeps those as ``settings`` (RunParameters field -> value) applied on top of the
parameter node's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields


@dataclass
class RunPlan:
    """general model -> ISO -> RSO on each region, for ``fixed`` and ``moving`` (volume nodes).

    ``regions``: ROI nodes and/or [R1, A1, S1, R2, A2, S2] lists (RAS mm), refined in order.
    ``iso_iterations`` / ``rso_iterations``: None keeps the parameter node's; ISO is skipped at 0.
    ``settings``: other RunParameters fields (device, seed, rsoMode, composition, modelPath, ...).
    ``general``: start with the general model. ``blocking``: wait for the last step and return the
    step records; otherwise ``process()`` must be called (Slicer's module logic does it with a timer)
    and the listeners report progress. ``timeout`` (s) and ``idle`` (called between polls) are the
    wait's. ``on_progress`` / ``on_step``: listeners set on the logic when given.
    """

    fixed: object
    moving: object
    regions: list = field(default_factory=list)
    iso_iterations: int | None = None
    rso_iterations: int | None = None
    settings: dict = field(default_factory=dict)
    general: bool = True
    blocking: bool = True
    timeout: float | None = None
    idle: Callable[[], None] | None = None
    on_progress: Callable[[dict], None] | None = None
    on_step: Callable[[str, dict], None] | None = None

    @classmethod
    def from_keywords(cls, fixed, moving, regions=(), **keywords) -> RunPlan:
        """The console's form, ``run(fixed, moving, regions, iso_iterations=3, device="cpu", ...)``:
        keywords that are the plan's own fields go there; all others are RunParameters settings."""
        own = {f.name for f in fields(cls)} - {"fixed", "moving", "regions", "settings"}
        plan = {name: value for name, value in keywords.items() if name in own}
        settings = {name: value for name, value in keywords.items() if name not in own}
        return cls(fixed, moving, list(regions), settings=settings, **plan)

    def changes(self) -> dict:
        """The RunParameters fields this run sets on the parameter node."""
        changes = dict(self.settings, fixedVolume=self.fixed, movingVolume=self.moving)
        if self.iso_iterations is not None:
            changes["isoIterations"] = int(self.iso_iterations)
        if self.rso_iterations is not None:
            changes["rsoIterations"] = int(self.rso_iterations)
        return changes
