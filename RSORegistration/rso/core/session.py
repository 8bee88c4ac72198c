"""The registration session: the clinician's state, its history, undo, and its folder on disk.

The state is the current displacement field plus the current network weights. Every step works
on copies and only an accepted step replaces the state, so a cancelled or failed step leaves it
exactly as it was. With a folder, each accepted step is written (atomically) before the call
returns, so a crash loses at most the step in flight and the session can be reopened.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from rso import __version__
from rso.core.boxes import RegionBox, box_from_fixed_index, box_from_lps, box_from_ras
from rso.core.geometry import ModelGrid, overlap_fraction
from rso.core.imageio import check_scalar_volume, read_displacement_field, read_image
from rso.core.losses import LossConfig, RegistrationLoss
from rso.core.metrics import measure
from rso.core.model import ModelConfig, RegistrationNet, normalise, resolve_device
from rso.core.native import NativeSettings, build_problem, refine_box
from rso.core.optimize import (PAPER_LEARNING_RATE, CancelToken, ProgressCallback, blend_weights, compose_local,
                               crop_window, fine_tune, optimise_field, predict, relative_to)
from rso.core.patches import add_patches
from rso.core import reprojection
from rso.core.reprojection import Views, read_views, views_pair
from rso.core.store import SessionState, SessionStore
from rso.core.summary import summary_text
from rso.errors import Diverged, InputError
from rso.core.steps import RSOSettings, StepRecord, check_iterations
from rso.options import (DEFAULT_BLEND_MARGIN_MM, DEFAULT_DEVICE, DEFAULT_ISO_ITERATIONS, DEFAULT_ISO_MATCH_ARTEFACTS,
                         DEFAULT_PRECISION, DEFAULT_SEED)

log = logging.getLogger(__name__)

MIN_OVERLAP = 0.01


class RegistrationSession:
    """general -> ISO -> RSO(box) ..., with undo, cancel, metrics and an on-disk folder."""

    def __init__(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        net: RegistrationNet,
        *,
        grid_shape=None,
        folder: str | Path | None = None,
        reference: sitk.Image | None = None,
        truth: sitk.Image | None = None,
        mask: sitk.Image | None = None,
        seed: int = DEFAULT_SEED,
        device: str = DEFAULT_DEVICE,
        loss: LossConfig = LossConfig(),
        model_source: str = "",
        precision: str = DEFAULT_PRECISION,
        fixed_views: Views | None = None,
        moving_views: Views | None = None,
    ):
        _check_inputs(fixed, moving, reference, truth, mask)
        self.fixed, self.moving, self.reference, self.truth, self.mask = fixed, moving, reference, truth, mask
        self.views = views_pair(fixed_views, moving_views)
        self.grid = ModelGrid.covering(fixed, grid_shape or net.config.grid)
        self.device = resolve_device(device)
        self.seed, self.loss_config, self.model_source = int(seed), loss, model_source
        self.net = net.to(self.device)
        self.precision = self.net.set_precision(precision, self.device)
        self._prepare_arrays()
        self.history: list[StepRecord] = []
        self._states: list[SessionState | None] = [SessionState(np.zeros((3, *self.grid.shape), np.float32),
                                                                _weights_copy(self.net))]
        self.store: SessionStore | None = None
        if folder is not None:
            self.attach_folder(folder)

    # ----------------------------------------------------------------- inputs on the model grid
    def _prepare_arrays(self) -> None:
        grid = self.grid
        self.fixed_hu = grid.resample(self.fixed)
        self.moving_hu = grid.resample(self.moving)
        self.reference_hu = grid.resample(self.reference) if self.reference is not None else self.fixed_hu
        self.truth_mm = grid.resample_field(self.truth) if self.truth is not None else None
        # Where quality is measured (e.g. the lungs): air outside the patient says nothing about motion.
        self.evaluation_mask = grid.resample(self.mask, default=0) > 0.5 if self.mask is not None else None
        self.fixed_t, self.moving_t = self._network_tensor(self.fixed_hu), self._network_tensor(self.moving_hu)
        self._matched: tuple[sitk.Image, sitk.Image] | None = None

    def compared_images(self, match_artefacts: bool) -> tuple[sitk.Image, sitk.Image]:
        """The (fixed, moving) images ISO and native RSO compare: artefact-matched where both images' views are known
        (rso.core.reprojection; computed once, a few seconds), the inputs otherwise."""
        if not (match_artefacts and self.views):
            return self.fixed, self.moving
        if self._matched is None:
            start = time.perf_counter()
            self._matched = reprojection.match_artefacts(self.fixed, self.moving, *self.views)
            log.info("matched the two images' artefacts in %.1f s (once per session)", time.perf_counter() - start)
        return self._matched

    # ----------------------------------------------------------------------------- the state
    @property
    def folder(self) -> Path | None:
        return self.store.folder if self.store is not None else None

    @property
    def state(self) -> SessionState:
        return self._state_at(len(self.history))

    def state_at(self, index: int) -> SessionState:
        """The state after step ``index`` (0: before any step); older states reload from disk."""
        return self._state_at(index)

    def _state_at(self, index: int) -> SessionState:
        if self._states[index] is None:
            self._states[index] = self.store.load_state(index)
        return self._states[index]

    def state_field(self, index: int) -> np.ndarray:
        """The field after step ``index`` (0: before any step), (3, z, y, x) model-grid voxels."""
        return self._effective_voxels(self._state_at(index))

    def _effective_voxels(self, state: SessionState) -> np.ndarray:
        """The coarse field plus the fine patches sampled at the model-grid voxels."""
        if not state.patches:
            return state.field
        return self.grid.mm_to_voxels(add_patches(self.grid.voxels_to_mm(state.field), self.grid, state.patches))

    @property
    def field_voxels(self) -> np.ndarray:
        """The current field, (3, z, y, x) model-grid voxels (dz, dy, dx)."""
        return self.state_field(len(self.history))

    @property
    def field_mm(self) -> np.ndarray:
        """The current field, (z, y, x, 3) LPS millimetres, fixed -> moving, on the model grid."""
        return self.grid.voxels_to_mm(self.field_voxels)

    def warped_model_grid(self, field_voxels: np.ndarray | None = None) -> np.ndarray:
        """The moving image (HU) warped by a field on the model grid."""
        field_voxels = self.field_voxels if field_voxels is None else field_voxels
        displacement = torch.from_numpy(np.ascontiguousarray(field_voxels)).to(self.device)[None]
        moving = torch.from_numpy(self.moving_hu + 1000.0).to(self.device)[None, None]
        with torch.no_grad():  # warp HU+1000 so that the zero padding outside is air
            warped = self.net.warp(moving, displacement)
        return warped[0, 0].cpu().numpy() - 1000.0

    # ----------------------------------------------------------------------------- the steps
    def general(self) -> StepRecord:
        """The general model's one forward pass (paper step 1)."""
        return self._run("general", {}, None, self._general_candidate)

    def iso(self, iterations: int = DEFAULT_ISO_ITERATIONS, *, learning_rate: float = PAPER_LEARNING_RATE,
            match_artefacts: bool = DEFAULT_ISO_MATCH_ARTEFACTS, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> StepRecord:
        """Image-specific optimisation: fine-tune the weights on the whole pair (paper eq. 3), artefact-matched
        where both images' views are known (``compared_images``): on the raw pair ISO fits the streaks."""
        check_iterations(iterations)
        params = {"iterations": iterations, "learning_rate": learning_rate,
                  "artefacts_matched": bool(match_artefacts and self.views)}
        return self._run("iso", params, None, lambda: self._iso_candidate(params, progress, cancel))

    def rso(self, box: RegionBox, settings: RSOSettings = RSOSettings(), *,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> StepRecord:
        """Region-specific optimisation: refine with the similarity restricted to ``box`` (eq. 6)."""
        self._check_box(box)
        params = asdict(settings)
        if settings.mode == "native":
            return self._run_native(box, settings, params, progress, cancel)
        return self._run("rso", params, box, lambda: self._rso_candidate(box, settings, progress, cancel))

    def _run_native(self, box: RegionBox, settings: RSOSettings, params: dict, progress, cancel) -> StepRecord:
        """Native-resolution RSO: a new fine patch, or a declined step that leaves the session as it was."""
        start = time.perf_counter()
        state = self.state
        earlier = [self._state_at(index) for index in range(len(self.history))] if settings.earlier_starts else []
        fixed, moving = self.compared_images(settings.match_artefacts)
        params["artefacts_matched"] = fixed is not self.fixed
        unfitted = (self.fixed, self.moving) if earlier and params["artefacts_matched"] else None
        problem = build_problem(fixed, moving, box, settings.blend_margin_mm, self.grid,
                                self.grid.voxels_to_mm(state.field), state.patches, self.device,
                                tuple((self.grid.voxels_to_mm(e.field), e.patches) for e in earlier), unfitted)
        native = NativeSettings(settings.similarity, settings.control_spacing_mm, settings.smoothness,
                                settings.step_mm, settings.min_gain, settings.presmooth_mm, settings.earlier_starts)
        torch.manual_seed(self.seed + len(self.history))
        patch, losses, verdict = refine_box(problem, native, settings.iterations, progress, cancel)
        guard = verdict.to_dict()
        if verdict.returned_to is not None:
            log.info("rso: the images prefer the box as it was after step %d: it returns there", verdict.returned_to)
        if patch is None:
            record = StepRecord("rso", params, losses, round(time.perf_counter() - start, 3),
                                self.metrics(self.field_voxels, box, self.field_voxels), box, declined=verdict.declined,
                                guard=guard)
            log.info("rso declined: %s", verdict.declined)
            return record
        return self._run("rso", params, box, lambda: ((state.field, (*state.patches, patch)), self.net, losses),
                         guard=guard, started=start)

    def _run(self, kind: str, params: dict, box: RegionBox | None, make_candidate, guard: dict | None = None,
             started: float | None = None) -> StepRecord:
        make_candidate = _finite(kind, make_candidate)
        torch.manual_seed(self.seed + len(self.history))
        start = time.perf_counter() if started is None else started
        try:
            candidate, net, losses = make_candidate()  # may raise Cancelled: nothing changed yet
        except Diverged:
            if not self.net.bf16:
                raise
            candidate, net, losses = self._repeat_in_fp32(kind, make_candidate)
            params = {**params, "precision": "fp32 (bf16 diverged)"}
        seconds = time.perf_counter() - start
        state = self._new_state(candidate, net)
        record = StepRecord(kind, params, losses, round(seconds, 3),
                            self.metrics(self._effective_voxels(state), box, self.field_voxels), box, guard=guard)
        self._accept(record, state)
        log.info("%s done in %.1f s: %s", kind, seconds, summary_text(record.metrics))
        return record

    def _new_state(self, candidate, net: torch.nn.Module) -> SessionState:
        """A candidate is a new coarse field, or (field, patches); weights are shared when unchanged."""
        field_voxels, patches = candidate if isinstance(candidate, tuple) else (candidate, ())
        index = len(self.history) + 1
        if net is self.net:
            return SessionState(field_voxels, self.state.weights, self.state.weights_from, patches)
        return SessionState(field_voxels, _weights_copy(net), index, patches)

    def _repeat_in_fp32(self, kind: str, make_candidate):
        """bf16 rounding can still blow a step up where fp32 does not: repeat that one step in fp32."""
        log.warning("%s diverged in bf16; repeating it in fp32", kind)
        self.net.set_precision("fp32", self.device)
        try:
            torch.manual_seed(self.seed + len(self.history))
            return make_candidate()
        finally:
            self.net.set_precision(self.precision, self.device)

    def _general_candidate(self):
        return predict(self.net, self.fixed_t, self.moving_t)[0].cpu().numpy(), self.net, []

    def _iso_candidate(self, params: dict, progress, cancel):
        net = copy.deepcopy(self.net)
        fixed_t, moving_t = self._network_inputs(params["artefacts_matched"])
        losses = fine_tune(net, fixed_t, moving_t, iterations=params["iterations"], loss_fn=self._loss(),
                           learning_rate=params["learning_rate"], step="iso", progress=progress, cancel=cancel)
        return predict(net, fixed_t, moving_t)[0].cpu().numpy(), net, losses

    def _network_inputs(self, matched: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 1, z, y, x) normalised fixed and moving on the model grid: the inputs, or the matched pair."""
        if not matched:
            return self.fixed_t, self.moving_t
        return tuple(self._network_tensor(self.grid.resample(image)) for image in self.compared_images(True))

    def _network_tensor(self, hu: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalise(hu)).to(self.device)[None, None]

    def _rso_candidate(self, box: RegionBox, settings: RSOSettings, progress, cancel):
        old = self.field_voxels
        margin = self.blend_margin_voxels(settings.blend_margin_mm)
        if settings.mode == "full":
            window, fixed, moving, region = None, self.fixed_t, self.moving_t, box.voxels.slices
        else:
            window = crop_window(box.voxels, old, self.grid.shape, margin)
            fixed, moving = self.fixed_t[(..., *window.slices)], self.moving_t[(..., *window.slices)]
            region = relative_to(box.voxels, window)
        target = (slice(None), *window.slices) if window is not None else (slice(None),)
        common = dict(iterations=settings.iterations, loss_fn=self._loss(), region=region, progress=progress,
                      cancel=cancel)
        if settings.mode == "direct":  # the weights stay as they are; only the field in the window moves
            net = self.net
            start = torch.from_numpy(old[target]).to(self.device)[None]
            new_window, losses = optimise_field(start, fixed, moving, net.warp, **common)
        else:
            net = copy.deepcopy(self.net)
            losses = fine_tune(net, fixed, moving, learning_rate=settings.learning_rate, step="rso", **common)
            if settings.compose == "global":
                return predict(net, self.fixed_t, self.moving_t)[0].cpu().numpy(), net, losses
            new_window = predict(net, fixed, moving)
        candidate = old.copy()
        candidate[target] = new_window[0].cpu().numpy()
        weights = blend_weights(box.voxels, margin, self.grid.shape)
        return compose_local(old, candidate, weights[None]), net, losses

    def _loss(self) -> RegistrationLoss:
        return RegistrationLoss(self.loss_config).to(self.device)

    def blend_margin_voxels(self, margin_mm: float) -> np.ndarray:
        return np.ceil(margin_mm / self.grid.voxel_size_mm()).astype(int)

    # --------------------------------------------------------------------------------- boxes
    def box_from_ras(self, ras) -> RegionBox:
        return box_from_ras(self.grid, ras)

    def box_from_lps(self, corner_a, corner_b) -> RegionBox:
        return box_from_lps(self.grid, corner_a, corner_b)

    def box_from_fixed_index(self, ijk) -> RegionBox:
        return box_from_fixed_index(self.grid, self.fixed, ijk)

    def _check_box(self, box: RegionBox) -> None:
        if not isinstance(box, RegionBox):
            raise InputError("RSO needs a RegionBox (use session.box_from_ras / box_from_lps)")
        if any(b > n or a < 0 or b <= a for a, b, n in zip(box.voxels.lo, box.voxels.hi, self.grid.shape)):
            raise InputError(f"box voxels {box.voxels} do not fit the model grid {self.grid.shape}")

    # ------------------------------------------------------------------------------- metrics
    def metrics(self, field_voxels: np.ndarray | None = None, box: RegionBox | None = None,
                previous: np.ndarray | None = None, margin_mm: float = DEFAULT_BLEND_MARGIN_MM) -> dict:
        """RMSE (HU), TRE (mm), folding and, given the previous field, the change outside box + margin."""
        field_voxels = self.field_voxels if field_voxels is None else field_voxels
        shape = self.grid.shape
        around = box.voxels.expanded(self.blend_margin_voxels(margin_mm), shape).mask(shape) if box else None
        return measure(self.grid.voxels_to_mm(field_voxels), self.warped_model_grid(field_voxels), self.reference_hu,
                       self.grid.index_to_lps, evaluation_mask=self.evaluation_mask,
                       box=self._evaluated(box.voxels.mask(shape)) if box else None, truth_mm=self.truth_mm,
                       previous_mm=self.grid.voxels_to_mm(previous) if previous is not None else None,
                       around_box=around)

    def _evaluated(self, region: np.ndarray) -> np.ndarray:
        """A region restricted to the evaluation mask, unless that would leave nothing."""
        if self.evaluation_mask is None:
            return region
        restricted = region & self.evaluation_mask
        return restricted if restricted.any() else region

    # ---------------------------------------------------------------------------------- undo
    def undo(self) -> StepRecord | None:
        """Drop the last step and restore the state before it, bit for bit; None if nothing to undo."""
        if not self.history:
            return None
        record = self.history.pop()
        self._states.pop()
        self.net.load_state_dict(self.state.weights)
        if self.store is not None:
            self._write_manifest()
            self.store.remove_state(len(self.history) + 1)
        log.info("undid %s", record.kind)
        return record

    def _accept(self, record: StepRecord, state: SessionState) -> None:
        index = len(self.history) + 1
        if self.store is not None:  # disk first: a crash now leaves the previous session intact
            self.store.save_state(index, state)
            self._write_manifest(self.history + [record])
        self.history.append(record)
        self._states.append(state)
        self.net.load_state_dict(state.weights)
        if self.store is not None and index >= 2:
            self._states[index - 2] = None  # older states reload from disk on undo

    # ------------------------------------------------------------------------------- folder
    def attach_folder(self, folder: str | Path) -> None:
        """Start writing the session (inputs, states, manifest) into a new folder."""
        self.store = SessionStore.create(folder)
        for index, state in enumerate(self._states):
            self.store.save_state(index, state)
        self.store.write_inputs(self._input_images())
        self._write_manifest()

    def _input_images(self) -> dict:
        images = {"fixed": self.fixed, "moving": self.moving, "reference": self.reference, "truth": self.truth,
                  "mask": self.mask}
        return {name: image for name, image in images.items() if image is not None}

    def _write_manifest(self, history: list[StepRecord] | None = None) -> None:
        self.store.write_manifest({
            "engine_version": __version__,
            "grid": self.grid.to_dict(),
            "model": {"config": self.net.config.to_dict(), "source": self.model_source},
            "loss": asdict(self.loss_config),
            "seed": self.seed,
            "precision": self.precision,
            "inputs": sorted(self._input_images()),
            "views": [v.to_dict() for v in self.views] if self.views else None,
            "steps": [r.to_dict() for r in (self.history if history is None else history)],
        })

    @classmethod
    def open(cls, folder: str | Path, device: str = DEFAULT_DEVICE) -> "RegistrationSession":
        """Reopen a session folder at its last accepted step."""
        store = SessionStore(folder)
        manifest = store.read_manifest()
        session = cls.__new__(cls)
        session._restore(store, manifest, device)
        return session

    def _restore(self, store: SessionStore, manifest: dict, device: str) -> None:
        images = {name: store.read_input(name) for name in manifest["inputs"]}
        self.fixed, self.moving = images["fixed"], images["moving"]
        self.reference, self.truth, self.mask = images.get("reference"), images.get("truth"), images.get("mask")
        self.views = tuple(Views.from_dict(v) for v in manifest["views"]) if manifest.get("views") else None
        self.grid = ModelGrid.from_dict(manifest["grid"])
        self.device = resolve_device(device)
        self.seed, self.loss_config = manifest["seed"], LossConfig(**manifest["loss"])
        self.model_source = manifest["model"]["source"]
        self.store = store
        self.history = [StepRecord.from_dict(r) for r in manifest["steps"]]
        self._states = [None] * (len(self.history) + 1)
        store.remove_orphan_states(len(self.history))
        self.net = RegistrationNet(ModelConfig.from_dict(manifest["model"]["config"])).to(self.device)
        self.precision = self.net.set_precision(manifest.get("precision", "fp32"), self.device)
        self.net.load_state_dict(self.state.weights)
        self._prepare_arrays()


def _check_inputs(fixed, moving, reference, truth, mask) -> None:
    for image, what in ((fixed, "fixed image"), (moving, "moving image"), (reference, "reference image"),
                        (mask, "evaluation mask")):
        if image is not None:
            check_scalar_volume(image, what)
    if truth is not None and (truth.GetDimension() != 3 or truth.GetNumberOfComponentsPerPixel() != 3):
        raise InputError("the truth field must be a 3-D displacement field with 3 components per voxel")
    if overlap_fraction(fixed, moving) < MIN_OVERLAP:
        raise InputError("fixed and moving images do not overlap in physical space (check origins and directions)")


def _finite(kind: str, make_candidate):
    """The candidate maker, refusing a non-finite field (a last optimiser step can blow up unseen by the loss)."""

    def checked():
        candidate, net, losses = make_candidate()
        field_voxels = candidate[0] if isinstance(candidate, tuple) else candidate
        if not np.isfinite(field_voxels).all():
            raise Diverged(f"{kind.upper()} produced a non-finite field; the session is unchanged: try fp32 precision")
        return candidate, net, losses

    return checked


def _weights_copy(net: torch.nn.Module) -> dict:
    return {key: value.detach().cpu().clone() for key, value in net.state_dict().items()}


def open_inputs(fixed_path, moving_path, reference_path=None, truth_path=None, mask_path=None,
                fixed_views_path=None, moving_views_path=None) -> dict:
    """Read a registration's input files, each checked, as keyword arguments for the session."""
    return {
        "fixed_views": read_views(fixed_views_path) if fixed_views_path else None,
        "moving_views": read_views(moving_views_path) if moving_views_path else None,
        "fixed": read_image(fixed_path, "fixed image"),
        "moving": read_image(moving_path, "moving image"),
        "reference": read_image(reference_path, "reference image") if reference_path else None,
        "truth": read_displacement_field(truth_path, "truth field") if truth_path else None,
        "mask": read_image(mask_path, "evaluation mask") if mask_path else None,
    }
