"""A registration's input files read and checked: the images a session is built on.

``PairInputs`` (rso.settings) names the files; ``read_inputs`` reads each one, with a one-line
InputError naming the first that cannot be used, before anything is written.
"""

from __future__ import annotations

import SimpleITK as sitk

from rso.core.imageio import read_image, read_truth_field
from rso.core.initial import INITIAL_TRANSFORM, read_initial_transform
from rso.core.pair import read_fit_mask
from rso.core.projection.geometry import Placement
from rso.core.projection.scan import PhaseScan
from rso.errors import InputError
from rso.settings import PairInputs


def read_inputs(inputs: PairInputs) -> dict:
    """The session's images and inputs, by name.

    Returns ``fixed``, ``moving`` (sitk.Image), ``reference``, ``truth`` (a displacement field, LPS
    mm), ``mask`` (where metrics are measured), ``fit_mask``, ``initial_transform`` (sitk.Transform,
    fixed -> moving points), ``fixed_geometry``, ``moving_geometry`` (PhaseScan: the geometry file's
    projections and how the phase was reconstructed) and ``placement``; each None where not given.
    """
    if not inputs.fixed or not inputs.moving:
        raise InputError("a registration needs a fixed and a moving image")
    images = {
        "fixed_geometry": _geometry(inputs.fixed_geometry),
        "moving_geometry": _geometry(inputs.moving_geometry),
        "placement": Placement.from_transform(inputs.placement) if inputs.placement else None,
        "fixed": read_image(inputs.fixed, "fixed image", inputs.fixed_series),
        "moving": read_image(inputs.moving, "moving image", inputs.moving_series),
        "reference": _optional(inputs.reference, "reference image"),
        "truth": read_truth_field(inputs.truth) if inputs.truth else None,
        "mask": _optional(inputs.metrics_mask, "evaluation mask"),
        "fit_mask": read_fit_mask(inputs.fit_mask),
    }
    images[INITIAL_TRANSFORM] = initial_transform(inputs, images["fixed"], images["moving"])
    return images


def _geometry(path: str | None):
    return PhaseScan.read(path) if path else None


def _optional(path: str | None, what: str) -> sitk.Image | None:
    return read_image(path, what) if path else None


def initial_transform(inputs: PairInputs, fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform | None:
    """T0 (fixed -> moving points) from the file or the pre-alignment, or None."""
    if inputs.initial_transform:
        return read_initial_transform(inputs.initial_transform)
    if inputs.prealign == "rigid":
        from rso.core.prealign import rigid_prealignment

        return rigid_prealignment(fixed, moving)
    return None
