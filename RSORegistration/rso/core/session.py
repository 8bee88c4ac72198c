"""The registration session: the clinician's state, its history, undo, and its folder on disk.

The state is the current displacement field plus the current network weights. Every step works
on copies and only an accepted step replaces the state, so a cancelled or failed step leaves it
exactly as it was. With a folder, each accepted step is written (atomically) before the call
returns, so a crash loses at most the step in flight and the session can be reopened.

The session composes three parts with one job each: the image pair (``rso.core.pair``), the
history (``rso.core.history``) and the step runners (``rso.core.runners``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from rso import __version__
from rso.core import runners
from rso.core.body import framed_grid, padding_as_air
from rso.core.boxes import Box, axial_end_distance_mm
from rso.core.geometry import ModelGrid
from rso.core.history import History
from rso.core.losses import LossConfig, RegistrationLoss
from rso.core.metrics import measure
from rso.core.model import ModelConfig, RegistrationNet, resolve_device
from rso.core.optimize import CancelToken, ProgressCallback
from rso.core.pair import ImagePair, Normalisation
from rso.core.projection.geometry import Placement
from rso.core.projection.scan import ScanPair
from rso.core.steps import StepRecord
from rso.core.store import SessionState, SessionStore
from rso.core.summary import summary_text
from rso.core.view_streaks import no_geometry_decline
from rso.errors import Diverged
from rso.options import (
    DEFAULT_BLEND_MARGIN_MM,
    DEFAULT_DEVICE,
)
from rso.settings import EngineSettings, ISOSettings, RSOSettings

log = logging.getLogger(__name__)


def _from_pair(name: str) -> property:
    return property(lambda self: getattr(self.pair, name), doc=f"The image pair's ``{name}``.")


class RegistrationSession:
    """general -> ISO -> RSO(box) ..., with undo, cancel, metrics and an on-disk folder."""

    fixed, moving, reference = _from_pair("fixed"), _from_pair("moving"), _from_pair("reference")
    truth, mask, geometry = _from_pair("truth"), _from_pair("mask"), _from_pair("geometry")
    fixed_hu, moving_hu, reference_hu = map(_from_pair, ("fixed_hu", "moving_hu", "reference_hu"))
    truth_mm, evaluation_mask = _from_pair("truth_mm"), _from_pair("evaluation_mask")
    box_from_ras, box_from_lps = _from_pair("box_from_ras"), _from_pair("box_from_lps")
    box_from_fixed_index, compared_images = _from_pair("box_from_fixed_index"), _from_pair("compared_images")

    def __init__(
        self,
        images: dict,
        net: RegistrationNet,
        *,
        engine: EngineSettings = EngineSettings(),
        folder: str | Path | None = None,
        model_source: str = "",
        normalisation: Normalisation | None = None,
    ):
        """``images``: the read inputs by name (``rso.core.inputs.read_inputs``: ``fixed`` and ``moving``,
        optional ``reference``, ``truth``, ``mask``, ``fit_mask``, ``initial_transform``, the projection
        geometries and ``placement``); ``engine``: the grid, device, precision, loss and seed. A CT's
        padding becomes air (``rso.core.body.padding_as_air``)."""
        images = dict(images)
        geometries = (images.pop("fixed_geometry", None), images.pop("moving_geometry", None))
        placement = images.pop("placement", None)
        images = _padding_as_air(images, normalisation or Normalisation())
        hu = normalisation is None or normalisation.fixed is None
        grid = framed_grid(images["fixed"], engine.grid or net.config.grid, hu)
        self.device = resolve_device(engine.device)
        self.seed, self.model_source = int(engine.seed), model_source
        self.loss_config = LossConfig(
            similarity=engine.network_similarity, smoothness_weight=engine.network_smoothness
        )
        self.net = net.to(self.device)
        self.precision = self.net.set_precision(engine.precision, self.device)
        self.pair = ImagePair.with_geometry(images, grid, self.device, geometries, placement, normalisation)
        initial = SessionState(np.zeros((3, *grid.shape), np.float32), _weights_copy(self.net))
        self._history = History(initial, lambda: _manifest_head(self))
        if folder is not None:
            self.attach_folder(folder)

    # ----------------------------------------------------------------------------- the state
    @property
    def grid(self) -> ModelGrid:
        return self.pair.grid

    @property
    def history(self) -> list[StepRecord]:
        """The accepted steps, oldest first (a live view: undo and new steps change it)."""
        return self._history.records

    @property
    def folder(self) -> Path | None:
        return self._history.folder

    @property
    def state(self) -> SessionState:
        return self._history.state

    def state_at(self, index: int) -> SessionState:
        """The state after step ``index`` (0: before any step); older states reload from disk."""
        return self._history.state_at(index)

    def state_field(self, index: int) -> np.ndarray:
        """The field after step ``index`` (0: before any step), (3, z, y, x) model-grid voxels."""
        state = self.state_at(index)
        return self.pair.effective_voxels(state.field, state.patches)

    @property
    def field_voxels(self) -> np.ndarray:
        """The current field, (3, z, y, x) model-grid voxels (dz, dy, dx)."""
        return self.state_field(len(self.history))

    @property
    def field_mm(self) -> np.ndarray:
        """The current field, (z, y, x, 3) LPS millimetres, fixed -> moving, on the model grid."""
        return self.grid.voxels_to_mm(self.field_voxels)

    def warped_model_grid(self, field_voxels: np.ndarray | None = None) -> np.ndarray:
        """The moving image (HU) warped by a field (3, z, y, x) on the model grid: (z, y, x) HU."""
        field_voxels = self.field_voxels if field_voxels is None else field_voxels
        displacement = torch.from_numpy(np.ascontiguousarray(field_voxels)).to(self.device)[None]
        moving = torch.from_numpy(self.moving_hu + 1000.0).to(self.device)[None, None]
        with torch.no_grad():  # warp HU+1000 so that the zero padding outside is air
            warped = self.net.warp(moving, displacement)
        return warped[0, 0].cpu().numpy() - 1000.0

    # ----------------------------------------------------------------------------- the steps
    def general(self) -> StepRecord:
        """The general model's one forward pass (paper step 1)."""
        return self._run("general", {}, None, lambda: runners.general(self._context()))

    def iso(
        self,
        settings: ISOSettings | int = ISOSettings(),
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> StepRecord:
        """Image-specific optimisation: fine-tune the weights on the whole pair (paper eq. 3),
        artefact-matched where both images' projection geometries are known (``compared_images``):
        on the raw pair ISO fits the streaks. A whole number is ``ISOSettings(iterations=n)``."""
        if not isinstance(settings, ISOSettings):
            settings = ISOSettings(iterations=settings)
        matched = bool(settings.match_artefacts and self.geometry)
        params = {
            "iterations": settings.iterations,
            "learning_rate": settings.learning_rate,
            "artefacts_matched": matched,
            "guard": settings.guard,
            "end_fade_mm": settings.end_fade_mm,
        }
        ctx, state = self._context(progress, cancel), self.state
        return self._run("iso", params, None, lambda: runners.iso(ctx, params, state))

    def rso(
        self,
        box: Box,
        settings: RSOSettings = RSOSettings(),
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> StepRecord:
        """Region-specific optimisation: refine with the similarity restricted to ``box`` (eq. 6)."""
        self.pair.check_box(box)
        params = asdict(settings)
        ctx = self._context(progress, cancel)
        if settings.mode == "native":
            return self._run_native(ctx, box, settings, params)
        old = self.field_voxels
        return self._run("rso", params, box, lambda: runners.network_rso(ctx, old, box, settings))

    def _run_native(self, ctx, box: Box, settings: RSOSettings, params: dict) -> StepRecord:
        """Native-resolution RSO: a new fine patch, or a declined step that leaves the session as it was
        (the scan's rule first, ``_scan_rule``, then the box's place, ``_end_rule``)."""
        start = time.perf_counter()
        settings, ruled_out = _scan_rule(self.pair, settings, params)
        ruled_out = ruled_out or _end_rule(self.pair, box, settings)
        if ruled_out:
            return self._declined(box, params, [], ruled_out, None, start)
        states = [self.state_at(index) for index in range(len(self.history) + 1)]
        torch.manual_seed(self.seed + len(self.history))
        candidate = runners.native_rso(ctx, states, box, settings)
        return self._run("rso", params, box, lambda: candidate, started=start)

    def _declined(self, box: Box, params: dict, losses, why: str, guard, start: float) -> StepRecord:
        """The record of a declined RSO step: the session stays as it was (nothing is accepted)."""
        seconds = round(time.perf_counter() - start, 3)
        metrics = self.metrics(self.field_voxels, box, self.field_voxels)
        log.info("rso declined: %s", why)
        return StepRecord("rso", params, losses, seconds, metrics, box, declined=why, guard=guard)

    def _context(self, progress=None, cancel=None) -> runners.StepContext:
        loss = RegistrationLoss(self.loss_config, self.pair.fit_t).to(self.device)  # fits inside the fit mask
        return runners.StepContext(self.pair, self.net, loss, progress, cancel)

    def _run(self, kind: str, params: dict, box, propose, started=None) -> StepRecord:
        propose = _finite(kind, propose)
        torch.manual_seed(self.seed + len(self.history))
        start = time.perf_counter() if started is None else started
        try:
            candidate = propose()  # may raise Cancelled: nothing changed yet
        except Diverged:
            if not self.net.bf16:
                raise
            candidate = self._repeat_in_fp32(kind, propose)
            params = {**params, "precision": "fp32 (bf16 diverged)"}
        guard, params = candidate.guard, {**params, **candidate.notes}
        if candidate.declined:  # an RSO step's guard declined it: nothing changes
            return self._declined(box, params, candidate.losses, candidate.declined, guard, start)
        seconds = time.perf_counter() - start
        state = self._new_state(candidate)
        metrics = self.metrics(self.pair.effective_voxels(state.field, state.patches), box, self.field_voxels)
        record = StepRecord(kind, params, candidate.losses, round(seconds, 3), metrics, box, guard=guard)
        self._history.accept(record, state)
        self.net.load_state_dict(state.weights)
        log.info("%s done in %.1f s: %s", kind, seconds, summary_text(record.metrics))
        return record

    def _new_state(self, candidate: runners.Candidate) -> SessionState:
        """The state a candidate makes; the weights are shared with the current state when unchanged."""
        index = len(self.history) + 1
        if candidate.net is self.net:
            current = self.state
            return SessionState(candidate.field, current.weights, current.weights_from, candidate.patches)
        return SessionState(candidate.field, _weights_copy(candidate.net), index, candidate.patches)

    def _repeat_in_fp32(self, kind: str, propose) -> runners.Candidate:
        """bf16 rounding can still blow a step up where fp32 does not: repeat that one step in fp32."""
        log.warning("%s diverged in bf16; repeating it in fp32", kind)
        self.net.set_precision("fp32", self.device)
        try:
            torch.manual_seed(self.seed + len(self.history))
            return propose()
        finally:
            self.net.set_precision(self.precision, self.device)

    def blend_margin_voxels(self, margin_mm: float) -> np.ndarray:
        return runners.margin_voxels(self.grid, margin_mm)

    # ------------------------------------------------------------------------------- metrics
    def metrics(
        self,
        field_voxels: np.ndarray | None = None,
        box: Box | None = None,
        previous: np.ndarray | None = None,
        margin_mm: float = DEFAULT_BLEND_MARGIN_MM,
    ) -> dict:
        """RMSE (HU), TRE (mm), folding and, given the previous field, the change outside box + margin."""
        field_voxels = self.field_voxels if field_voxels is None else field_voxels
        grid, shape = self.grid, self.grid.shape
        around = None
        if box:
            around = box.voxels.expanded(self.blend_margin_voxels(margin_mm), shape).mask(shape)
        return measure(
            grid.voxels_to_mm(field_voxels),
            self.warped_model_grid(field_voxels),
            self.reference_hu,
            grid.index_to_lps,
            evaluation_mask=self.evaluation_mask,
            box=self.pair.evaluated(box.voxels.mask(shape)) if box else None,
            truth_mm=self.truth_mm,
            change=(grid.voxels_to_mm(previous), around) if previous is not None and box else None,
        )

    # ---------------------------------------------------------------------------------- undo
    def undo(self) -> StepRecord | None:
        """Drop the last step and restore the state before it, bit for bit; None if nothing to undo."""
        record = self._history.undo()
        if record is not None:
            self.net.load_state_dict(self.state.weights)
            log.info("undid %s", record.kind)
        return record

    # ------------------------------------------------------------------------------- folder
    def attach_folder(self, folder: str | Path) -> None:
        """Start writing the session (inputs, states, manifest) into a new folder."""
        self._history.attach(folder, self.pair.input_images())

    @classmethod
    def open(cls, folder: str | Path, device: str = DEFAULT_DEVICE) -> RegistrationSession:
        """Reopen a session folder at its last accepted step."""
        store = SessionStore(folder)
        manifest = store.read_manifest()
        session = cls.__new__(cls)
        _restore(session, store, manifest, device)
        return session


def _padding_as_air(images: dict, normalisation: Normalisation) -> dict:
    """``images`` with the fixed and the moving image's padding as air where they are CT in HU
    (``rso.core.body.padding_as_air``)."""
    in_hu = {"fixed": normalisation.fixed is None, "moving": normalisation.moving is None}
    return {
        name: padding_as_air(image, f"{name} image") if in_hu.get(name) else image
        for name, image in images.items()
    }


def _manifest_head(session: RegistrationSession) -> dict:
    """The manifest's parts that are not the steps (rso.core.store)."""
    return {
        "engine_version": __version__,
        "grid": session.grid.to_dict(),
        "model": {"config": session.net.config.to_dict(), "source": session.model_source},
        "loss": asdict(session.loss_config),
        "seed": session.seed,
        "precision": session.precision,
        "inputs": sorted(session.pair.input_images()),
        **(session.pair.scans.to_dict() if session.pair.scans else {"geometry": None}),
        "placement": session.pair.placement.to_dict(),
        "normalisation": session.pair.normalisation.to_dict(),  # the network's inputs: HU or own percentiles
    }


def _restore(session: RegistrationSession, store: SessionStore, manifest: dict, device: str) -> None:
    """Fill a bare session from its folder's manifest (``RegistrationSession.open``)."""
    images = {name: store.read_input(name) for name in manifest["inputs"]}
    scans = ScanPair.from_manifest(manifest.get("geometry"), manifest.get("reconstruction"))
    placement = Placement.from_dict(manifest["placement"]) if manifest.get("placement") else None
    session.device = resolve_device(device)
    session.seed, session.loss_config = manifest["seed"], LossConfig(**manifest["loss"])
    session.model_source = manifest["model"]["source"]
    records = [StepRecord.from_dict(r) for r in manifest["steps"]]
    session._history = History.reopened(store, records, lambda: _manifest_head(session))
    session.net = RegistrationNet(ModelConfig.from_dict(manifest["model"]["config"])).to(session.device)
    session.precision = session.net.set_precision(manifest.get("precision", "fp32"), session.device)
    session.net.load_state_dict(session.state.weights)
    grid = ModelGrid.from_dict(manifest["grid"])
    normalisation = Normalisation.from_dict(manifest.get("normalisation"))
    session.pair = ImagePair(images, grid, session.device, scans, placement, normalisation)


def _scan_rule(pair: ImagePair, settings: RSOSettings, params: dict) -> tuple[RSOSettings, str | None]:
    """Where the geometry files say both phases are TV reconstructions (``ScanPair``): the step's settings
    (no second opinion on a full fan) and why it is declined (a half fan), noted in ``params``. Without
    the files: declined where the images show few-view cone-beam streaks (``view_streaks``)."""
    if not settings.scan_rule:
        return settings, None
    scans = pair.scans
    if scans is None:
        modulation = pair.view_modulation
        if modulation is not None:
            params["view_modulation"] = round(modulation, 3)
        return settings, no_geometry_decline(modulation)
    if scans.reconstruction != "tv":
        return settings, None
    params["scan"] = scans.status()
    if not scans.wants_second_opinion():
        params["max_disagreement_mm"] = 0.0
        settings = replace(settings, max_disagreement_mm=0.0)
    return settings, scans.native_rso_decline()


def _end_rule(pair: ImagePair, box: Box, settings: RSOSettings) -> str | None:
    """Why a box too near the fixed image's end along the scanner's rotation axis is declined
    (``min_end_distance_mm``; 0: anywhere), where the projection geometry says the images are cone-beam
    reconstructions: their last centimetres along that axis are their least reliable, and artefacts fixed
    in the scanner favour no motion."""
    axis = pair.rotation_axis()
    if axis is None or settings.min_end_distance_mm <= 0:
        return None
    distance = axial_end_distance_mm(pair.fixed, box, axis)
    if distance >= settings.min_end_distance_mm:
        return None
    return (
        f"the box lies {max(distance, 0.0):.0f} mm from the image's end along the scanner's rotation axis "
        f"(at least {settings.min_end_distance_mm:.0f} mm is needed): a cone-beam reconstruction's last "
        "centimetres there are its least reliable, and artefacts fixed there favour no motion"
    )


def _finite(kind: str, propose):
    """The runner, refusing a non-finite field (a last optimiser step can blow up unseen by the loss)."""

    def checked() -> runners.Candidate:
        candidate = propose()
        if not np.isfinite(candidate.field).all():
            raise Diverged(
                f"{kind.upper()} produced a non-finite field; the session is unchanged: try fp32 precision"
            )
        return candidate

    return checked


def _weights_copy(net: torch.nn.Module) -> dict:
    return {key: value.detach().cpu().clone() for key, value in net.state_dict().items()}
