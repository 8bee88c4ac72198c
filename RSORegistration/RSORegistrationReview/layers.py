"""What the review page's slice views show: the fixed image with the difference overlay, or one image
alone, at the window/level preset the user chose.
"""

from __future__ import annotations

from collections.abc import Callable

from rso.errors import InputError
from RSORegistrationLib.display import WINDOW_LEVEL_PRESETS, apply_window_level, show_in_slice_views
from RSORegistrationLib.logic import RegistrationLogic
from RSORegistrationLib.results import reusable

from .inputs import InputNodes

# What the slice views show: the fixed image with the difference overlay, or one image alone.
LAYERS = ("difference", "fixed", "warped", "moving")


class SliceLayers:
    """The views' layers for the pair ``inputs()`` returns (None: no pair yet, nothing to show)."""

    def __init__(self, scene, logic: RegistrationLogic, inputs: Callable[[], InputNodes | None]):
        self.scene, self.logic, self.inputs = scene, logic, inputs
        self.layer, self.window_level = "difference", "auto"

    def set_layer(self, layer: str) -> None:
        if layer not in LAYERS:
            raise InputError(f"the views show one of {LAYERS}, not {layer!r}")
        self.layer = layer
        self.show()

    def set_window_level(self, preset: str) -> None:
        if preset not in WINDOW_LEVEL_PRESETS:
            raise InputError(
                f"window/level preset must be one of {list(WINDOW_LEVEL_PRESETS)}, not {preset!r}"
            )
        self.window_level = preset
        self.show()

    def show(self) -> None:
        """Set the slice views' layers for the chosen view and the image window/level."""
        inputs = self.inputs()
        if inputs is None:
            return
        params = self.logic.parameters()
        warped, difference = reusable(params.warpedVolume, params), reusable(params.differenceVolume, params)
        for volume in (inputs.fixed, inputs.moving_as_acquired, warped):
            if volume is not None:
                apply_window_level(volume, self.window_level)
        # Before the first step the warped image is the moving one and there is no difference yet.
        background = {
            "fixed": inputs.fixed,
            "difference": inputs.fixed,
            "warped": warped or inputs.moving_as_acquired,
            "moving": inputs.moving_as_acquired,
        }[self.layer]
        show_in_slice_views(self.scene, background, difference if self.layer == "difference" else None)
