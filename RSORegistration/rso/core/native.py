"""RSO at the fixed image's own resolution: a smooth correction of the field inside the clinician's box.

The network's model grid has 5-6 mm voxels; the box is where the clinician looks closely. Here the
box gets a window of its own (box + blend margin) at the fixed image's spacing, at most 2 mm and
at least 1 mm, independent of the model grid. On it a correction ``c`` of the current field is
optimised:

* **Capture first**: a translation search (block matching over +-12 mm) finds the box's offset, which
  a gradient step from zero misses beyond a few millimetres; Adam then refines from there.
* **Return to an earlier answer** (``earlier_starts``): a whole-image step can move a region away from
  an answer that was better there. ISO fits the artefact-matched pair, so that pair is biased towards
  ISO's answer; the images as given carry other streaks and were not fitted. Where they prefer an
  earlier state's field (no registration, the general model, ...) in the box by the guard's margin,
  the step returns the box to it, and does not refine it on the pair ISO fitted.
* **Few unknowns**: ``c`` lives on a control grid (8 mm by default), interpolated trilinearly.
* **A similarity streaks fool less**: MIND-SSC descriptors (radius 2, dilation 2) of the fixed
  window and of the moving image around it, both pre-smoothed (``rso.core.mind``), compared in the box.
* **Regularised as a correction**: the diffusion penalty acts on ``c``, not on the total field, so
  real breathing motion already in the field costs nothing; a barrier keeps det J away from folding.
* **A guard**: the step is declined when the best correction does not explain the images clearly
  better than no correction, or when it would add folded voxels (``GuardVerdict``).

The defaults in ``rso.options`` were chosen on the training anatomies (scripts/sweep_rso.py).

The result is a ``FieldPatch``: ``c`` times the blend weights (1 in the box, a cosine ramp to 0
across the margin), exactly zero beyond box + margin (docs/architecture.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.layers import GaussianFilter

from rso.core.boxes import RegionBox, VoxelBox
from rso.core.geometry import AIR_HU, ModelGrid, upsample_field
from rso.core.metrics import jacobian_determinant, jacobian_determinant_torch
from rso.core.losses import MIND_RADIUS
from rso.core.mind import mind_ssc
from rso.core.optimize import CancelToken, ProgressCallback, blend_weights, run_iterations
from rso.core.patches import FieldPatch, add_patches

FOLD_MARGIN = 0.3  # det J below this costs: the refinement keeps the field well away from folding
FOLD_WEIGHT = 1000.0  # a few folded voxels among ~40 000 must outweigh the similarity they buy
WINDOW_SPACING_RANGE_MM = (1.0, 2.0)  # finer than 1 mm costs much for little; coarser than 2 mm loses detail
REACH_MARGIN_MM = 20.0  # the moving crop extends this far beyond where the current field points
SEARCH_REACH_MM = 12.0  # the translation search looks this far from the current field
SHIFT_PENALTY = 0.05  # a shift as long as the reach costs 5 % more than no shift


@dataclass(frozen=True)
class NativeProblem:
    """One box's refinement problem on its window.

    ``fixed`` and ``moving`` are (1, P, Z, Y, X) / (1, P, Zm, Ym, Xm) HU on the window and on the
    moving crop, one channel per image pair: channel 0 the pair the refinement fits, channel 1 (P = 2) the
    images as given where the fitted pair is artefact-matched (``unfitted``); ``base_index`` (Z, Y, X, 3)
    holds where the current field sends each window voxel, as (z, y, x) continuous indices of the moving
    crop; ``mm_to_index`` (3, 3) turns an LPS-mm correction into (z, y, x) index steps; ``box`` is the box
    on the window grid.
    """

    window: ModelGrid
    fixed: torch.Tensor
    moving: torch.Tensor
    base_index: torch.Tensor
    mm_to_index: torch.Tensor
    box: VoxelBox
    margin_voxels: np.ndarray  # (z, y, x)
    current_mm: np.ndarray  # (Z, Y, X, 3) the current field on the window, LPS mm
    earlier_mm: tuple[np.ndarray, ...] = ()  # earlier states' fields on the window, each (Z, Y, X, 3) LPS mm


def window_spacing(fixed: sitk.Image) -> float:
    low, high = WINDOW_SPACING_RANGE_MM
    return float(np.clip(min(fixed.GetSpacing()), low, high))


def window_grid(fixed: sitk.Image, model_grid: ModelGrid, box: RegionBox, margin_mm: float
                ) -> tuple[ModelGrid, VoxelBox, np.ndarray]:
    """An isotropic grid in the fixed image's direction covering the box, its margin and a border of zeros.

    The box is the model-grid voxels' cells (what the session's metrics call the box); the margin is
    the session's blend margin in model voxels, less one window voxel, so that the patch is exactly
    zero at every model voxel beyond box + margin (docs/architecture.md §4). Returns the grid, the
    box in its voxels and the margin in its voxels per axis (z, y, x).
    """
    spacing = window_spacing(fixed)
    model_spacing = model_grid.voxel_size_mm()  # (z, y, x)
    reach_mm = np.ceil(margin_mm / model_spacing) * model_spacing + model_spacing / 2 - spacing
    margin = np.maximum(np.floor(reach_mm / spacing), 0).astype(int)
    lo, hi = np.array(box.voxels.lo) - 0.5, np.array(box.voxels.hi) - 0.5  # cell edges, model index (z, y, x)
    # Whole window voxels inside the box's cells: rounding up would let the margin reach past the model's.
    box_size = np.maximum(np.floor((hi - lo) * model_spacing / spacing + 1e-6).astype(int), 1)
    start = margin + 1  # one voxel of zeros outside the margin
    shape = box_size + 2 * start
    # Along the shared axes, the window's voxel 0 sits start - 0.5 window voxels before the box's first edge.
    corner = model_grid.index_to_lps_points(lo)
    direction = np.array(fixed.GetDirection()).reshape(3, 3)
    origin = corner - direction @ ((start - 0.5)[::-1] * spacing)
    grid = ModelGrid(tuple(int(n) for n in shape), (spacing,) * 3, tuple(origin.tolist()), tuple(fixed.GetDirection()))
    voxels = VoxelBox(tuple(int(v) for v in start), tuple(int(v) for v in start + box_size))
    return grid, voxels, margin


def current_field_on(grid: ModelGrid, model_grid: ModelGrid, coarse_mm: np.ndarray, patches) -> np.ndarray:
    """The session's field (coarse + patches) at ``grid``'s voxel centres, (Z, Y, X, 3) LPS mm."""
    coarse = upsample_field(model_grid.field_image(coarse_mm), grid.reference_image())
    return add_patches(sitk.GetArrayFromImage(coarse).astype(np.float32), grid, patches)


def build_problem(fixed: sitk.Image, moving: sitk.Image, box: RegionBox, margin_mm: float,
                  model_grid: ModelGrid, coarse_mm: np.ndarray, patches, device: torch.device,
                  earlier: tuple = (), unfitted: tuple[sitk.Image, sitk.Image] | None = None) -> NativeProblem:
    """Resample the fixed window, the current field and a moving crop that holds every target.

    ``earlier``: (coarse_mm, patches) of earlier session states, candidate starts for the refinement.
    ``unfitted``: the same images seen another way, on the same grids (the images as given, where ``fixed``
    and ``moving`` are artefact-matched): evidence the current field was not fitted to, which judges a
    return to an earlier state (``Refinement.choose_earlier_state``).
    """
    window, box_voxels, margin = window_grid(fixed, model_grid, box, margin_mm)
    current = current_field_on(window, model_grid, coarse_mm, patches)
    earlier_mm = tuple(current_field_on(window, model_grid, field, its_patches) for field, its_patches in earlier)
    voxels = window.index_to_lps_points(np.stack(np.meshgrid(*[np.arange(n) for n in window.shape], indexing="ij"),
                                                 axis=-1))
    points = voxels + current
    # The crop holds every target of every candidate start, so that none is judged on clamped samples.
    crop = _covering_grid(window, np.concatenate([points, *[voxels + e for e in earlier_mm]]), REACH_MARGIN_MM)
    pairs = ((fixed, moving),) if unfitted is None else ((fixed, moving), unfitted)
    fixed_hu = np.stack([sitk.GetArrayFromImage(_resample(f, window)) for f, _ in pairs])
    moving_hu = np.stack([sitk.GetArrayFromImage(_resample(m, crop)) for _, m in pairs])
    to_index = np.linalg.inv(crop.index_to_lps).T[:, ::-1]  # LPS mm (row) -> (z, y, x) index steps
    return NativeProblem(window, _tensor(fixed_hu, device)[None], _tensor(moving_hu, device)[None],
                         _tensor(crop.lps_to_index(points), device), _tensor(to_index, device), box_voxels, margin,
                         current, earlier_mm)


def correction_tensor(field_mm: np.ndarray, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """A (Z, Y, X, 3) LPS-mm correction on the window as the (1, 3, Z, Y, X) tensor ``Refinement`` takes."""
    return _tensor(field_mm.transpose(3, 0, 1, 2)[None], device)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 tensor on ``device`` (contiguous: torch cannot wrap numpy's strided views)."""
    return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)


def _covering_grid(window: ModelGrid, points_lps: np.ndarray, reach_mm: float) -> ModelGrid:
    """A grid on the window's lattice (same direction and spacing) covering ``points`` + ``reach``."""
    index = window.lps_to_index(points_lps.reshape(-1, 3))
    reach = reach_mm / window.spacing[0]
    lo, hi = np.floor(index.min(axis=0) - reach), np.ceil(index.max(axis=0) + reach)
    origin = window.index_to_lps_points(lo)
    shape = tuple(int(n) for n in (hi - lo + 1))
    return ModelGrid(shape, window.spacing, tuple(origin.tolist()), window.direction)


def _resample(image: sitk.Image, grid: ModelGrid) -> sitk.Image:
    return sitk.Resample(image, grid.reference_image(), sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def sample(volume: torch.Tensor, index_zyx: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``volume`` (1, C, Z, Y, X) at continuous indices (Z', Y', X', 3) -> (1, C, Z', Y', X')."""
    return _sample_batch(volume, index_zyx[None])


def _sample_batch(volume: torch.Tensor, index_zyx: torch.Tensor) -> torch.Tensor:
    """(B, C, Z, Y, X) sampled at (B, Z', Y', X', 3) (z, y, x) indices -> (B, C, Z', Y', X')."""
    size = torch.tensor(volume.shape[2:], dtype=index_zyx.dtype, device=index_zyx.device)
    normalised = 2.0 * index_zyx / (size - 1) - 1.0
    return F.grid_sample(volume, normalised.flip(-1), mode="bilinear", padding_mode="border", align_corners=True)


@dataclass(frozen=True)
class NativeSettings:
    """How a native-resolution RSO step refines (frozen defaults in ``rso.options``)."""

    similarity: str
    control_spacing_mm: float
    smoothness: float
    learning_rate_mm: float
    min_gain: float  # the guard: the similarity in the box must improve by at least this fraction
    presmooth_mm: float = 0.0  # Gaussian sigma applied to both images first: CBCT noise and streaks are fine
    earlier_starts: bool = False  # may return the box to an earlier state the evidence prefers (problem.earlier_mm)


class Refinement:
    """The correction's parameters, the loss and the optimisation for one problem."""

    def __init__(self, problem: NativeProblem, settings: NativeSettings):
        self.problem, self.settings = problem, settings
        window = problem.window
        spacing = window.spacing[0]
        extent = np.array(window.shape) * spacing
        control = tuple(int(max(2, np.ceil(e / settings.control_spacing_mm) + 1)) for e in extent)
        device = problem.fixed.device
        self.control = torch.zeros((1, 3, *control), device=device, requires_grad=True)
        # A fixed part of the correction: zero, or an earlier state's field minus the current one
        # (choose_earlier_state).
        self.start = torch.zeros((1, 3, *window.shape), device=device)
        self.box = (slice(None), slice(None), *problem.box.slices)
        self.spacing = spacing
        # (moving, fixed) features per image pair: [0] the fitted pair, [-1] the unfitted one where there is one.
        self.pair_features = list(zip(self._features(problem.moving), self._features(problem.fixed)))
        self.diffusion = DiffusionLoss()
        self.weights = _tensor(blend_weights(problem.box, problem.margin_voxels, window.shape), device)
        self.current = _tensor(problem.current_mm, device)
        self.lps_to_index = _tensor(np.linalg.inv(window.index_to_lps), device)
        region = self.weights > 0
        # The barrier's floor per voxel: FOLD_MARGIN, or lower where the current field is already lower, so that
        # the refinement is not spent on undoing compression (or folding) it did not make.
        current_det = jacobian_determinant_torch(self.current, self.lps_to_index)[region]
        self.fold_floor = torch.clamp(current_det, max=FOLD_MARGIN)
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=7)

    def _features(self, hu: torch.Tensor) -> list[torch.Tensor]:
        """What the similarity compares, per image pair (one channel of ``hu`` each): (1, C, ...) MIND descriptors
        (C = 12), or the network's normalised intensities (C = 1)."""
        if self.settings.presmooth_mm > 0:
            hu = GaussianFilter(3, self.settings.presmooth_mm / self.spacing).to(hu.device)(hu)
        if self.settings.similarity == "mind":
            return [mind_ssc(pair, radius=MIND_RADIUS) for pair in hu.split(1, dim=1)]
        return list(((hu + 1000.0) / 2000.0).split(1, dim=1))

    def correction_mm(self) -> torch.Tensor:
        """(1, 3, Z, Y, X) LPS mm on the window: the chosen start plus the optimised part."""
        return self.start + self._optimised_mm()

    def _optimised_mm(self) -> torch.Tensor:
        return F.interpolate(self.control, size=self.problem.window.shape, mode="trilinear", align_corners=True)

    def similarity(self, correction_mm: torch.Tensor, pair: int = 0) -> torch.Tensor:
        """The similarity term inside the box for a correction (lower is better), on one image pair (0: the
        fitted pair, -1: the last, the unfitted pair where there is one)."""
        moving, fixed = self.pair_features[pair]
        steps = torch.einsum("bczyx,cd->zyxd", correction_mm, self.problem.mm_to_index)
        warped = sample(moving, self.problem.base_index + steps)
        fixed, warped = fixed[self.box], warped[self.box]
        if self.settings.similarity == "lncc":
            return 1.0 + self.lncc(warped, fixed)  # MONAI's LNCC loss is -NCC: 0 here means identical
        return torch.mean((fixed - warped) ** 2)

    def loss(self) -> torch.Tensor:
        optimised = self._optimised_mm()
        correction = self.start + optimised
        # The penalty is on what this step optimises: a start is an earlier state's field, smooth already.
        penalty = self.diffusion(optimised / self.spacing) if self.settings.smoothness else 0.0
        return self.similarity(correction) + self.settings.smoothness * penalty + FOLD_WEIGHT * self.folding(correction)

    def choose_earlier_state(self) -> tuple[int, float] | None:
        """Return to the earlier state whose field the evidence prefers, where it explains at least ``min_gain``
        of the box's remaining difference under the current field.

        The evidence is the unfitted pair where there is one (the current field was fitted to the other),
        else the fitted pair. Returns (the state's index in ``problem.earlier_mm``, its gain), or None; the
        start becomes that state's field.
        """
        current = self.problem.current_mm
        candidates = [correction_tensor(e - current, self.start.device) for e in self.problem.earlier_mm]
        with torch.no_grad():
            now = float(self.similarity(torch.zeros_like(self.start), pair=-1))
            gains = [1.0 - float(self.similarity(c, pair=-1)) / now if now > 0 else 0.0 for c in candidates]
        best = int(np.argmax(gains)) if gains else None
        if best is None or gains[best] < self.settings.min_gain:
            return None
        self.start = candidates[best]
        return best, gains[best]

    def folding(self, correction_mm: torch.Tensor) -> torch.Tensor:
        """A barrier on det J where the correction applies: zero while det J stays above its floor."""
        refined = self.current + self.weights[..., None] * correction_mm[0].permute(1, 2, 3, 0)
        det = jacobian_determinant_torch(refined, self.lps_to_index)[self.weights > 0]
        return torch.mean(torch.relu(self.fold_floor - det) ** 2)

    def search_translation(self, reach_mm: float = SEARCH_REACH_MM) -> np.ndarray:
        """The best constant shift of the box (LPS mm), coarse grid then fine, as the refinement's start.

        Block matching catches the several-millimetre offsets a gradient step from zero misses (MIND
        sees about a dilation's worth around the optimum); shifts pay a little for their length, so a
        flat cost stays at zero.
        """
        best = np.zeros(3)
        for step in (reach_mm / 4, reach_mm / 12):
            offsets = np.arange(-4, 5) * step if step == reach_mm / 4 else np.arange(-3, 4) * step
            grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
            candidates = best + grid
            costs = self._shift_costs(candidates)
            best = candidates[int(np.argmin(costs))]
        return best

    def _shift_costs(self, shifts_mm: np.ndarray, batch: int = 64) -> np.ndarray:
        problem = self.problem
        start_steps = torch.einsum("bczyx,cd->zyxd", self.start, problem.mm_to_index)
        base = (problem.base_index + start_steps)[problem.box.slices]  # (Zb, Yb, Xb, 3)
        moving, fixed = self.pair_features[0]
        fixed = fixed[self.box]
        steps = torch.from_numpy(shifts_mm.astype(np.float32)) @ problem.mm_to_index.cpu()
        costs = []
        with torch.no_grad():
            for chunk in torch.split(steps.to(base.device), batch):
                points = base[None] + chunk[:, None, None, None, :]
                volume = moving.expand(len(chunk), *moving.shape[1:])
                warped = _sample_batch(volume, points)
                costs.append(((warped - fixed) ** 2).mean(dim=(1, 2, 3, 4)))
        penalty = SHIFT_PENALTY * (np.linalg.norm(shifts_mm, axis=1) / SEARCH_REACH_MM) ** 2
        return torch.cat(costs).cpu().numpy() * (1.0 + penalty)

    def start_at(self, shift_mm: np.ndarray) -> None:
        with torch.no_grad():
            self.control[:] = torch.as_tensor(shift_mm, dtype=self.control.dtype).view(1, 3, 1, 1, 1)

    def run(self, iterations: int, progress: ProgressCallback | None, cancel: CancelToken | None) -> list[float]:
        optimizer = torch.optim.Adam([self.control], lr=self.settings.learning_rate_mm)
        return run_iterations(optimizer, self.loss, iterations, "rso", progress, cancel)


@dataclass(frozen=True)
class GuardVerdict:
    """Whether a refinement explains the box better, and why not when it does not."""

    gain: float  # 1 - similarity(c) / similarity(0): the fraction of the box's dissimilarity removed
    jacobian_min: float  # smallest det J of the refined field in box + margin
    folded_before: int  # voxels with det J <= 0 in box + margin, before and after
    folded_after: int
    largest_correction_mm: float
    declined: str | None
    returned_to: int | None = None  # the earlier state the box returned to (its index in the session's history)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("gain", "jacobian_min", "folded_before", "folded_after",
                                              "largest_correction_mm", "returned_to")}


def judge(refinement: Refinement, weights: np.ndarray, correction: np.ndarray,
          returned: tuple[int, float] | None = None) -> GuardVerdict:
    """Decline a correction that does not clearly beat no correction, or that would add folding.

    ``returned``: (state, gain) where the correction returns the box to an earlier state: its gain was
    measured on the unfitted pair (``Refinement.choose_earlier_state``), not on the pair the current field fitted.
    """
    problem = refinement.problem
    if returned is None:
        with torch.no_grad():
            before = float(refinement.similarity(torch.zeros_like(refinement.correction_mm())))
            after = float(refinement.similarity(refinement.correction_mm()))
        gain = 1.0 - after / before if before > 0 else 0.0
    else:
        gain = returned[1]
    region = weights > 0
    index_to_lps = problem.window.index_to_lps
    det_before = jacobian_determinant(problem.current_mm, index_to_lps)[region]
    det_after = jacobian_determinant(problem.current_mm + weights[..., None] * correction, index_to_lps)[region]
    folded_before, folded_after = int((det_before <= 0).sum()), int((det_after <= 0).sum())
    largest = float(np.linalg.norm(correction[region], axis=-1).max())
    declined = None
    if folded_after > folded_before:
        declined = (f"the refinement would fold the field in the box ({folded_after} folded voxels instead of "
                    f"{folded_before}; min det J {det_after.min():.2f})")
    elif gain < refinement.settings.min_gain:
        declined = (f"the images in the box already agree: the best correction ({largest:.1f} mm) explains only "
                    f"{100 * gain:.1f} % of the remaining difference (at least {100 * refinement.settings.min_gain:.0f} % "
                    "is needed)")
    return GuardVerdict(gain, float(det_after.min()), folded_before, folded_after, largest, declined,
                        None if returned is None else returned[0])


def refine_box(problem: NativeProblem, settings: NativeSettings, iterations: int,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
    """Optimise the correction; returns (patch, losses, verdict). The patch is None when declined.

    Where the box returns to an earlier state (``earlier_starts``) there is nothing to optimise: refining it on
    the fitted pair would pull it back towards the answer that pair had misled (the module's docstring).
    """
    refinement = Refinement(problem, settings)
    returned = refinement.choose_earlier_state() if settings.earlier_starts else None
    losses = []
    if returned is None:
        refinement.start_at(refinement.search_translation())
        losses = refinement.run(iterations, progress, cancel)
    with torch.no_grad():
        correction = refinement.correction_mm()[0].permute(1, 2, 3, 0).cpu().numpy()
    weights = blend_weights(problem.box, problem.margin_voxels, problem.window.shape)
    verdict = judge(refinement, weights, correction, returned)
    patch = None if verdict.declined else FieldPatch(problem.window, (weights[..., None] * correction).astype(np.float32))
    return patch, losses, verdict
