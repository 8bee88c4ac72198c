"""The image pair of a session: its inputs, their copies on the model grid, and what the steps compare.

The pair knows nothing of the network's weights or of the history: it holds the fixed and moving
images (plus the optional reference, truth and evaluation mask), resamples them once onto the model
grid, and caches the artefact-matched pair that ISO and native RSO compare (rso.core.reprojection).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import SimpleITK as sitk
import torch

from rso.core import reprojection
from rso.core.boxes import RegionBox, box_from_fixed_index, box_from_lps, box_from_ras
from rso.core.geometry import ModelGrid, overlap_fraction
from rso.core.imageio import check_scalar_volume
from rso.core.model import normalise
from rso.core.reprojection import Views, views_pair
from rso.errors import InputError

log = logging.getLogger(__name__)

MIN_OVERLAP = 0.01
INPUT_NAMES = ("fixed", "moving", "reference", "truth", "mask")


class ImagePair:
    """Fixed and moving images on one model grid, with the arrays every step and metric reads.

    Arrays on the model grid (z, y, x): ``fixed_hu``, ``moving_hu``, ``reference_hu`` (HU, float32),
    ``truth_mm`` ((z, y, x, 3) LPS mm or None), ``evaluation_mask`` (bool or None); ``fixed_t`` and
    ``moving_t`` are the network's (1, 1, z, y, x) normalised inputs on ``device``.
    """

    def __init__(
        self,
        images: dict[str, sitk.Image | None],
        grid: ModelGrid,
        device: torch.device,
        views: tuple[Views, Views] | None = None,
    ):
        check_inputs(**{name: images.get(name) for name in INPUT_NAMES})
        self.fixed, self.moving = images["fixed"], images["moving"]
        self.reference, self.truth, self.mask = (
            images.get("reference"),
            images.get("truth"),
            images.get("mask"),
        )
        self.grid, self.device, self.views = grid, device, views
        self._resample()

    @classmethod
    def from_views(cls, images: dict, grid: ModelGrid, device: torch.device, fixed_views, moving_views):
        return cls(images, grid, device, views_pair(fixed_views, moving_views))

    def _resample(self) -> None:
        grid = self.grid
        self.fixed_hu = grid.resample(self.fixed)
        self.moving_hu = grid.resample(self.moving)
        self.reference_hu = grid.resample(self.reference) if self.reference is not None else self.fixed_hu
        self.truth_mm = grid.resample_field(self.truth) if self.truth is not None else None
        # Where quality is measured (e.g. the lungs): air outside the patient says nothing about motion.
        self.evaluation_mask = grid.resample(self.mask, default=0) > 0.5 if self.mask is not None else None
        self.fixed_t, self.moving_t = self.network_tensor(self.fixed_hu), self.network_tensor(self.moving_hu)
        self._matched: tuple[sitk.Image, sitk.Image] | None = None

    def input_images(self) -> dict[str, sitk.Image]:
        images = {"fixed": self.fixed, "moving": self.moving, "reference": self.reference}
        images |= {"truth": self.truth, "mask": self.mask}
        return {name: image for name, image in images.items() if image is not None}

    # ------------------------------------------------------------------ what the steps compare
    def compared_images(self, match_artefacts: bool) -> tuple[sitk.Image, sitk.Image]:
        """The (fixed, moving) images ISO and native RSO compare: artefact-matched where both images' views
        are known (rso.core.reprojection; computed once, a few seconds), the inputs otherwise."""
        if not (match_artefacts and self.views):
            return self.fixed, self.moving
        if self._matched is None:
            start = time.perf_counter()
            self._matched = reprojection.match_artefacts(self.fixed, self.moving, *self.views)
            seconds = time.perf_counter() - start
            log.info("matched the two images' artefacts in %.1f s (once per session)", seconds)
        return self._matched

    def network_inputs(self, matched: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 1, z, y, x) normalised fixed and moving on the model grid: the inputs, or the matched pair."""
        if not matched:
            return self.fixed_t, self.moving_t
        compared = self.compared_images(True)
        return tuple(self.network_tensor(self.grid.resample(image)) for image in compared)

    def network_tensor(self, hu: np.ndarray) -> torch.Tensor:
        """(z, y, x) HU -> (1, 1, z, y, x) normalised network input on the pair's device."""
        return torch.from_numpy(normalise(hu)).to(self.device)[None, None]

    # ------------------------------------------------------------------------------- boxes
    def box_from_ras(self, ras) -> RegionBox:
        return box_from_ras(self.grid, ras)

    def box_from_lps(self, corner_a, corner_b) -> RegionBox:
        return box_from_lps(self.grid, corner_a, corner_b)

    def box_from_fixed_index(self, ijk) -> RegionBox:
        return box_from_fixed_index(self.grid, self.fixed, ijk)

    def check_box(self, box: RegionBox) -> None:
        if not isinstance(box, RegionBox):
            raise InputError("RSO needs a RegionBox (use session.box_from_ras / box_from_lps)")
        shape = self.grid.shape
        if any(b > n or a < 0 or b <= a for a, b, n in zip(box.voxels.lo, box.voxels.hi, shape)):
            raise InputError(f"box voxels {box.voxels} do not fit the model grid {shape}")

    def evaluated(self, region: np.ndarray) -> np.ndarray:
        """A region restricted to the evaluation mask, unless that would leave nothing."""
        if self.evaluation_mask is None:
            return region
        restricted = region & self.evaluation_mask
        return restricted if restricted.any() else region


def check_inputs(fixed, moving, reference=None, truth=None, mask=None) -> None:
    """Each input is a 3-D volume of the right kind, and the two images overlap in physical space."""
    named = ((fixed, "fixed image"), (moving, "moving image"), (reference, "reference image"))
    for image, what in (*named, (mask, "evaluation mask")):
        if image is not None:
            check_scalar_volume(image, what)
    if truth is not None and (truth.GetDimension() != 3 or truth.GetNumberOfComponentsPerPixel() != 3):
        raise InputError("the truth field must be a 3-D displacement field with 3 components per voxel")
    if overlap_fraction(fixed, moving) < MIN_OVERLAP:
        raise InputError(
            "fixed and moving images do not overlap in physical space (check origins and directions)"
        )
