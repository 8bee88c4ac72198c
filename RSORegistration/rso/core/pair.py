"""The image pair of a session: its inputs, their copies on the model grid, and what the steps compare.

The pair knows nothing of the network's weights or of the history: it holds the fixed and moving
images (plus the optional reference, truth, evaluation mask and fit mask), resamples them once onto the
model grid, normalises them for the network (``Normalisation``: the HU formula, or a non-CT image's own
percentiles), and caches the artefact-matched pair that ISO and native RSO compare: each image seen again
through the other's projection geometry (rso.core.projection.matching).

With an initial transform T0 (rso.core.initial) the pair's ``moving`` image is the moving image
resampled through T0, which the steps register the fixed image against; ``original_moving`` keeps the
image as given, which the results resample through the composed field and the session folder stores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import SimpleITK as sitk
import torch

from rso.core.boxes import Box, box_from_fixed_index, box_from_lps, box_from_ras
from rso.core.geometry import ModelGrid, overlap_fraction
from rso.core.imageio import check_ct_intensities, check_scalar_volume, read_file
from rso.core.initial import INITIAL_TRANSFORM, aligned_moving, truth_after_initial
from rso.core.model import normalise
from rso.core.patches import add_patches
from rso.core.projection import matching
from rso.core.projection.geometry import Placement, ProjectionGeometry
from rso.core.projection.scan import ScanPair
from rso.core.view_streaks import STREAKS_SEEN, no_geometry_decline, pair_modulation
from rso.errors import InputError

log = logging.getLogger(__name__)

MIN_OVERLAP = 0.01
INPUT_NAMES = ("fixed", "moving", "reference", "truth", "mask", "fit_mask")
NON_CT_PERCENTILES = (0.5, 99.5)  # a non-CT image's intensities that go where -1000 and 1000 HU go


@dataclass(frozen=True)
class Normalisation:
    """How the fixed and the moving image become the network's input (``rso.core.model.normalise``).

    Each is None (the HU formula: the image looks like CT) or the image's own (low, high) intensities,
    its NON_CT_PERCENTILES, mapped to 0 and 1 as the formula maps -1000 and 1000 HU.
    """

    fixed: tuple[float, float] | None = None
    moving: tuple[float, float] | None = None

    @classmethod
    def choose(cls, fixed: sitk.Image, moving: sitk.Image, allow_non_ct: bool) -> Normalisation:
        """The one place the choice is made: an image that does not look like CT
        (``rso.core.imageio.check_ct_intensities``) is refused, or with ``allow_non_ct`` gets its own
        window."""
        windows = []
        for name, image in (("fixed", fixed), ("moving", moving)):
            looks_like_ct = check_ct_intensities(image, f"{name} image", allow_non_ct)
            windows.append(None if looks_like_ct else own_window(image))
            if windows[-1] is not None:
                low, high = windows[-1]
                log.info(
                    "%s image: its intensities %.4g..%.4g (its percentiles %s) -> the network's 0..1",
                    name,
                    low,
                    high,
                    NON_CT_PERCENTILES,
                )
        return cls(*windows)

    def to_dict(self) -> dict:
        """As the session manifest keeps it: {"fixed": [low, high] or None, "moving": ...}."""
        return {name: list(w) if w else None for name, w in (("fixed", self.fixed), ("moving", self.moving))}

    @classmethod
    def from_dict(cls, data: dict | None) -> Normalisation:
        """From ``to_dict``; None (a manifest from before the choice was kept): the HU formula."""
        data = data or {}
        return cls(*(tuple(data[name]) if data.get(name) else None for name in ("fixed", "moving")))


def own_window(image: sitk.Image) -> tuple[float, float]:
    """An image's NON_CT_PERCENTILES (its minimum and maximum where they coincide), as Python floats."""
    values = sitk.GetArrayViewFromImage(image)
    low, high = (float(v) for v in np.percentile(values, NON_CT_PERCENTILES))
    return (low, high) if high > low else (float(values.min()), float(values.max()))


def read_fit_mask(path) -> sitk.Image | None:
    """The fit mask's file (None: no fit mask), read and checked (``check_fit_mask``)."""
    if not path:
        return None
    mask = read_file(path, "fit mask")
    check_fit_mask(mask)
    return mask


def check_fit_mask(mask: sitk.Image) -> None:
    """A fit mask is a 3-D scalar image, nonzero inside; unlike an image it may be constant (all ones on a
    grid of its own). Whether it overlaps the fixed image is checked on the model grid."""
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the fit mask must be a 3-D scalar image (nonzero inside), not {mask.GetDimension()}-D with "
            f"{mask.GetNumberOfComponentsPerPixel()} components per voxel"
        )


class ImagePair:
    """Fixed and moving images on one model grid, with the arrays every step and metric reads.

    Arrays on the model grid (z, y, x): ``fixed_hu``, ``moving_hu``, ``reference_hu`` (HU, float32),
    ``truth_mm`` ((z, y, x, 3) LPS mm or None), ``evaluation_mask`` (bool or None: where metrics are
    measured), ``fit_grid`` (bool or None: where ISO and RSO compare the images); ``fixed_t`` and
    ``moving_t`` are the network's (1, 1, z, y, x) normalised inputs on ``device`` (``normalisation``),
    ``fit_t`` the fit mask as (1, 1, z, y, x) float 0/1 there (or None).
    """

    def __init__(
        self,
        images: dict[str, sitk.Image | None],
        grid: ModelGrid,
        device: torch.device,
        scans: ScanPair | None = None,
        placement: Placement | None = None,
        normalisation: Normalisation | None = None,
    ):
        self.original_moving, self.initial_transform = images["moving"], images.get(INITIAL_TRANSFORM)
        self.scans = scans  # what the geometry files say about the scan (None: no geometry given)
        if self.initial_transform is not None:
            check_without_geometry(self.geometry)
            aligned = aligned_moving(images["fixed"], images["moving"], self.initial_transform)
            images = {**images, "moving": aligned}
        check_inputs(**{name: images.get(name) for name in INPUT_NAMES})
        self.fit_mask, self.normalisation = images.get("fit_mask"), normalisation or Normalisation()
        self.fixed, self.moving = images["fixed"], images["moving"]
        self.reference, self.truth, self.mask = (
            images.get("reference"),
            images.get("truth"),
            images.get("mask"),
        )
        self.grid, self.device = grid, device
        self.placement = placement or Placement.default()
        self._resample()

    @classmethod
    def with_geometry(
        cls,
        images: dict,
        grid: ModelGrid,
        device: torch.device,
        geometries,
        placement=None,
        normalisation=None,
    ):
        """``geometries``: the (fixed, moving) scans (``PhaseScan``, or ``ProjectionGeometry`` for an FDK
        phase), both or neither (None)."""
        return cls(images, grid, device, ScanPair.of(*geometries), placement, normalisation)

    @property
    def geometry(self) -> tuple[ProjectionGeometry, ProjectionGeometry] | None:
        """The (fixed, moving) projection geometries artefact matching uses: None unless both phases' are
        given and both are FDK reconstructions."""
        scans = self.scans
        return scans.geometries if scans is not None and scans.matchable else None

    def rotation_axis(self) -> np.ndarray | None:
        """(3,) the scanner's rotation axis as an LPS unit vector (RTK's y axis through the placement), where
        the projection geometries are known (``geometry``); else None."""
        if self.geometry is None:
            return None
        axis = self.placement.rtk_to_lps(self.fixed)[0][:, 1]
        return axis / np.linalg.norm(axis)

    @cached_property
    def view_modulation(self) -> float | None:
        """How strongly the images carry few-view cone-beam streaks (``rso.core.view_streaks``), measured
        once per pair on the images as read; None for images that are not CT (no HU to measure)."""
        if any(window is not None for window in (self.normalisation.fixed, self.normalisation.moving)):
            return None
        return pair_modulation(self.fixed, self.moving)

    def _resample(self) -> None:
        grid = self.grid
        self.fixed_hu = grid.resample(self.fixed)
        self.moving_hu = grid.resample(self.moving)
        self.reference_hu = grid.resample(self.reference) if self.reference is not None else self.fixed_hu
        truth = truth_after_initial(self.truth, self.initial_transform) if self.truth is not None else None
        self.truth_mm = grid.resample_field(truth) if truth is not None else None
        # Where quality is measured (e.g. the lungs): air outside the patient says nothing about motion.
        self.evaluation_mask = grid.resample(self.mask, default=0) > 0.5 if self.mask is not None else None
        # What ISO and RSO fit (ANTs' and elastix's masks): their similarity only counts inside it.
        self.fit_grid, self.fit_t = self._fit_mask_on_grid(), None
        if self.fit_grid is not None:
            self.fit_t = torch.from_numpy(self.fit_grid.astype(np.float32)).to(self.device)[None, None]
        self.fixed_t, self.moving_t = self._normalised(self.fixed_hu, self.moving_hu)
        self._matched: tuple[sitk.Image, sitk.Image] | None = None
        self.matching_seconds: float | None = None  # the one-off cost of matching, once it ran

    def _fit_mask_on_grid(self) -> np.ndarray | None:
        """The fit mask (nonzero inside) on the model grid, (z, y, x) bool; InputError where it misses the
        fixed image."""
        if self.fit_mask is None:
            return None
        inside = self.grid.resample(sitk.Cast(self.fit_mask != 0, sitk.sitkFloat32), default=0) > 0.5
        if not inside.any():
            raise InputError(
                "the fit mask does not overlap the fixed image: it selects none of its voxels, or none in "
                "the body's frame where a CT reaches far beyond the body (check its origin, direction and "
                "values)"
            )
        return inside

    def input_images(self) -> dict[str, sitk.Image | sitk.Transform]:
        """The inputs as given (the moving image before T0, and T0), as the session folder keeps them."""
        images = {"fixed": self.fixed, "moving": self.original_moving, "reference": self.reference}
        images |= {"truth": self.truth, "mask": self.mask, "fit_mask": self.fit_mask}
        images[INITIAL_TRANSFORM] = self.initial_transform
        return {name: image for name, image in images.items() if image is not None}

    def effective_voxels(self, field: np.ndarray, patches) -> np.ndarray:
        """A state's coarse field (3, z, y, x) plus its fine patches sampled at the model-grid voxels."""
        if not patches:
            return field
        grid = self.grid
        return grid.mm_to_voxels(add_patches(grid.voxels_to_mm(field), grid, patches))

    # ------------------------------------------------------------------ what the steps compare
    def compared_images(self, match_artefacts: bool) -> tuple[sitk.Image, sitk.Image]:
        """The (fixed, moving) images ISO and native RSO compare: artefact-matched where both images'
        projection geometries are known (computed once per session and cached: seconds for a cone
        beam at the working grid), the inputs otherwise."""
        if not (match_artefacts and self.geometry):
            return self.fixed, self.moving
        if self._matched is None:
            start = time.perf_counter()
            self._matched = matching.match_artefacts(self.fixed, self.moving, self.geometry, self.placement)
            self.matching_seconds = round(time.perf_counter() - start, 3)
            log.info("matched the two images' artefacts in %.1f s (once per session)", self.matching_seconds)
        return self._matched

    def matching_status(self, match_artefacts: bool) -> str:
        """One line: whether the steps compare artefact-matched images, and if not, why (without geometry,
        and where the images carry few-view cone-beam streaks, what that means for box steps)."""
        status = matching.matching_status(self.scans, match_artefacts)
        if self.scans is None and no_geometry_decline(self.view_modulation):
            status += f"; {STREAKS_SEEN} (angular modulation {self.view_modulation:.2f})"
        return status

    def network_inputs(self, matched: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 1, z, y, x) normalised fixed and moving on the model grid: the inputs, or the matched pair."""
        if not matched:
            return self.fixed_t, self.moving_t
        return self._normalised(*(self.grid.resample(image) for image in self.compared_images(True)))

    def _normalised(self, fixed: np.ndarray, moving: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, y, x) fixed and moving intensities -> their network inputs (``network_tensor``)."""
        windows = (self.normalisation.fixed, self.normalisation.moving)
        return tuple(self.network_tensor(hu, window) for hu, window in zip((fixed, moving), windows))

    def network_tensor(self, hu: np.ndarray, window: tuple[float, float] | None = None) -> torch.Tensor:
        """(z, y, x) intensities -> (1, 1, z, y, x) normalised network input on the pair's device; ``window``:
        the image's own (``Normalisation``), None for the HU formula."""
        return torch.from_numpy(normalise(hu, window)).to(self.device)[None, None]

    # ------------------------------------------------------------------------------- boxes
    def box_from_ras(self, ras) -> Box:
        return box_from_ras(self.grid, ras)

    def box_from_lps(self, corner_a, corner_b) -> Box:
        return box_from_lps(self.grid, corner_a, corner_b)

    def box_from_fixed_index(self, ijk) -> Box:
        return box_from_fixed_index(self.grid, self.fixed, ijk)

    def check_box(self, box: Box) -> None:
        if not isinstance(box, Box):
            raise InputError("RSO needs a Box (use session.box_from_ras / box_from_lps)")
        shape = self.grid.shape
        if any(b > n or a < 0 or b <= a for a, b, n in zip(box.voxels.lo, box.voxels.hi, shape)):
            raise InputError(f"box voxels {box.voxels} do not fit the model grid {shape}")
        if self.fit_grid is not None and not self.fit_grid[box.voxels.slices].any():
            raise InputError("the box lies outside the fit mask (--fit-mask): RSO has nothing to fit there")

    def evaluated(self, region: np.ndarray) -> np.ndarray:
        """A region restricted to the evaluation mask, unless that would leave nothing."""
        if self.evaluation_mask is None:
            return region
        restricted = region & self.evaluation_mask
        return restricted if restricted.any() else region


def check_without_geometry(geometry) -> None:
    """Artefact matching reprojects each image through the other's projection geometry, in the frame both
    phases were reconstructed in: an image resampled through an initial transform has left it."""
    if geometry:
        raise InputError(
            "an initial transform cannot be combined with projection geometries: the phases of one "
            "CBCT share their frame, and artefact matching needs the images in it"
        )


def check_inputs(fixed, moving, reference=None, truth=None, mask=None, fit_mask=None) -> None:
    """Each input is a 3-D volume of the right kind, and the two images overlap in physical space."""
    named = ((fixed, "fixed image"), (moving, "moving image"), (reference, "reference image"))
    for image, what in (*named, (mask, "evaluation mask")):
        if image is not None:
            check_scalar_volume(image, what)
    if fit_mask is not None:
        check_fit_mask(fit_mask)
    if truth is not None and (truth.GetDimension() != 3 or truth.GetNumberOfComponentsPerPixel() != 3):
        raise InputError("the truth field must be a 3-D displacement field with 3 components per voxel")
    if overlap_fraction(fixed, moving) < MIN_OVERLAP:
        raise InputError(
            "fixed and moving images do not overlap in physical space (check origins and directions)"
        )
