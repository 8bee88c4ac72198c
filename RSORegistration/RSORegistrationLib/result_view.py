"""What the scene shows of the session: the result files in the output nodes, the overlay chosen over
the fixed volume, the carried contours and the folder last exported to.

The node work is ``results``' (pure functions of scene, parameters and files); this class keeps what
must outlive one step: the overlay the clinician chose stays on after every later step.
"""

from __future__ import annotations

from .display import raised_band_hu
from .parameters import RunParameters, parameter_node, read_parameters, write_parameters
from .results import paste_step_patch, show_carried_labels, show_overlay, show_step_result, update_charts


class ResultView:
    """The output nodes named by the scene's parameter node, and the overlay shown over the fixed volume.

    ``overlay``: "difference" or a quality map ("jacobian", "folding", "change"). ``labels_report``
    and ``carried_labels``: the last carried contours' report and their segmentation node.
    ``exported``: the files the last export wrote (name -> path).
    """

    def __init__(self, scene):
        self.scene = scene
        self.overlay = "difference"
        self.labels_report: dict | None = None
        self.carried_labels = None
        self.exported: dict | None = None
        self._new_band_hu: float | None = None  # a raised band not yet said (band_news)
        self._band_of: str | None = None  # the difference volume whose band was last said

    def parameters(self) -> RunParameters:
        return read_parameters(parameter_node(self.scene))

    def set_parameters(self, params: RunParameters) -> None:
        write_parameters(parameter_node(self.scene), params)

    def show(self, paths: dict | None, history: list[dict]) -> None:
        """The current result files into the output nodes (charts only when there are no files)."""
        params = self.parameters()
        if params.fixedVolume is None or params.movingVolume is None:
            return  # the inputs left the scene meanwhile
        if paths:
            show_step_result(self.scene, params, paths, history)
            if self.overlay != "difference":  # the overlay the clinician chose stays on after each step
                show_overlay(self.scene, params, self.overlay)
            self._note_band(params.differenceVolume)
        else:
            update_charts(self.scene, params, history)
        self.set_parameters(params)

    def band_news(self) -> float | None:
        """The difference overlay's band, once, after it was raised above the default for a new difference
        volume (a new pair gets new volumes); else None."""
        news, self._new_band_hu = self._new_band_hu, None
        return news

    def _note_band(self, difference) -> None:
        if difference is None or difference.GetID() == self._band_of:
            return
        self._new_band_hu = raised_band_hu(difference)
        self._band_of = difference.GetID() if self._new_band_hu is not None else None

    def paste(self, patch: dict, history: list[dict]) -> bool:
        """A native step's window pasted into the output nodes shown; False when they are not all there
        (the whole images are needed then)."""
        params = self.parameters()
        if params.fixedVolume is None or params.movingVolume is None:
            return True  # the inputs left the scene meanwhile: nothing to show
        return paste_step_patch(self.scene, params, patch, history)

    def show_overlay(self, name: str) -> None:
        """Show the difference ("difference") or a quality map ("jacobian", "folding", "change") over the
        fixed volume, now and after every later step."""
        show_overlay(self.scene, self.parameters(), name)
        self.overlay = name

    def show_labels(self, source, result: dict) -> None:
        """The contours the engine carried from ``source`` (on the moving volume) as a segmentation on the
        fixed one."""
        self.labels_report = result.get("report")
        self.carried_labels = show_carried_labels(self.scene, self.parameters(), source, result)
