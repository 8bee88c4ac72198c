"""ROI boxes as triggers: a box placed (or edited) is refined at once; a refined box that was moved is
offered again to the front end (refined again there when the clinician asks, or at once in the review page).

The RoiWatcher decides when an edit is finished (the user let go of a handle); this decides what
follows, on the state of the session.
"""

from __future__ import annotations

from collections.abc import Callable

from rso.errors import InputError

from .display import style_region
from .engine_queue import EngineQueue
from .history import StepHistory
from .outcomes import Feedback
from .roi import RoiWatcher


class RegionTrigger:
    """Watches ROI nodes and queues RSO on the ones placed or edited.

    ``auto_refine()``: the autoRefine parameter now; ``refine(roi)``: the logic's RSO request (it
    raises InputError for a box it cannot refine, which is reported, never lost, since it comes from
    inside a VTK observer).
    """

    def __init__(
        self,
        scene,
        engine: EngineQueue,
        steps: StepHistory,
        feedback: Feedback,
        auto_refine: Callable[[], bool],
        refine: Callable[[object], None],
    ):
        self.engine, self.steps, self.feedback = engine, steps, feedback
        self.auto_refine, self.refine = auto_refine, refine
        self.watcher = RoiWatcher(scene, self.ready)

    def watch(self, roi) -> None:
        """Refine automatically when this ROI is placed or changed (if autoRefine is on)."""
        if not self.watcher.watching(roi):
            style_region(roi, used=self.steps.is_refined(roi))
            self.watcher.watch(roi)

    def ready(self, roi) -> None:
        """The ROI was placed or an edit of it finished."""
        if not self.engine.can_step:
            self.feedback.set_status("region drawn; run the general model first, then the region is refined")
            return
        if self.engine.holds(roi):
            return  # already queued or running on this region
        if self.steps.is_refined(roi):
            style_region(roi, used=False)
            if self.feedback.on_region_moved:
                self.feedback.on_region_moved(roi)
            return
        if self.auto_refine():
            try:
                self.refine(roi)
            except InputError as exc:  # raised inside a VTK observer: report it, never lose it
                self.feedback.set_status(f"rso not started: {exc}")
                self.feedback.error("input", str(exc))
