"""The accepted steps as the logic knows them: their records, the model grid, and the ROI boxes refined.

The engine holds the session; this is its mirror in the scene's process, updated from each answer.
Undo is the engine's (bit for bit, docs/architecture.md §4); here it pops the record and turns a
region whose RSO step was undone back into a new one (drawn yellow, refined again when moved).
"""

from __future__ import annotations

from rso.core.geometry import ModelGrid
from rso.errors import InputError

from .display import style_region
from .engine_queue import StepRequest
from .roi import box_argument

BOX_MATCH_MM = 1e-3  # an ROI's box and a step record's box within this are the same box


class StepHistory:
    """``history``: the step records (general, ISO, RSO ...), oldest first; ``grid``: the model grid;
    ``regions_done``: ROI node id -> the [R1, A1, S1, R2, A2, S2] box (RAS mm) it was refined with."""

    def __init__(self, scene):
        self.scene = scene
        self.history: list[dict] = []
        self.grid: ModelGrid | None = None
        self.regions_done: dict[str, list[float]] = {}

    def clear(self) -> None:
        self.history, self.grid, self.regions_done = [], None, {}

    def opened(self, result: dict) -> None:
        """A session opened (or reopened): its grid and the steps it already holds."""
        self.grid = ModelGrid.from_dict(result["grid"]) if result.get("grid") else None
        self.history = list(result.get("history") or [])

    def record(self, job: StepRequest, result: dict) -> None:
        """A step (or an undo) the engine accepted: the history as it now stands."""
        if "history" in result:
            self.history = list(result["history"])
        elif job.cmd == "undo":
            self.history = self.history[:-1]
        elif result.get("record"):
            self.history.append(result["record"])

    def mark_regions(self, job: StepRequest) -> None:
        """After an accepted step: the region it refined is drawn as refined; an undo un-marks its region."""
        if job.region is not None:
            self.regions_done[job.region.GetID()] = job.args["box_ras"]
            style_region(job.region, used=True)
        if job.cmd == "undo":
            self.forget_undone_regions()

    def forget_undone_regions(self) -> None:
        """A region whose RSO step was undone is no longer refined: drawn as new, refined again when moved."""
        applied = [record.get("box_ras") for record in self.history if record.get("kind") == "rso"]
        for node_id, box in list(self.regions_done.items()):
            if not any(
                other is not None and max(abs(a - b) for a, b in zip(box, other)) < BOX_MATCH_MM
                for other in applied
            ):
                del self.regions_done[node_id]
                roi = self.scene.GetNodeByID(node_id)
                if roi is not None:
                    style_region(roi, used=False)

    def is_refined(self, roi) -> bool:
        return roi.GetID() in self.regions_done


def moved_since(roi, box_ras: list[float]) -> bool:
    """Whether the ROI's box is no longer ``box_ras`` (RAS mm): the user moved it while it was refined."""
    try:
        return box_argument(roi) != box_ras
    except InputError:
        return False  # removed or emptied meanwhile
