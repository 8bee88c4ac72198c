"""The paper's three-step workflow (Algorithm 1) as one call: general -> ISO -> RSO per box.

Used by the ``register`` command and by researchers from Python. Every input is checked before
anything is written, so bad input leaves no partial output.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .export import check_output_folder, format_table, summary_row, write_results
from .losses import LossConfig
from .model import ModelConfig, build_model
from .options import DEFAULT_PRECISION
from .optimize import CancelToken, Progress
from .session import RegistrationSession, RSOSettings, open_inputs

log = logging.getLogger(__name__)


@dataclass
class RegisterJob:
    fixed: str
    moving: str
    out: str
    model: str | None = None
    channels: tuple[int, ...] | None = None
    grid: tuple[int, int, int] | None = None
    iso: int = 100
    boxes_ras: list[list[float]] = field(default_factory=list)
    boxes_ijk: list[list[int]] = field(default_factory=list)
    rso: RSOSettings = field(default_factory=RSOSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    truth: str | None = None
    reference: str | None = None
    mask: str | None = None
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    seed: int = 0
    figure: bool = True

    @classmethod
    def from_args(cls, args) -> "RegisterJob":
        return cls(
            fixed=args.fixed, moving=args.moving, out=args.out, model=args.model, channels=args.channels,
            grid=tuple(args.grid) if args.grid else None, iso=args.iso, boxes_ras=args.roi, boxes_ijk=args.roi_ijk,
            rso=RSOSettings(iterations=args.rso, mode=args.rso_mode, compose=args.compose, blend_margin_mm=args.blend_margin),
            loss=LossConfig(similarity=args.similarity, smoothness_weight=args.smoothness),
            truth=args.truth, reference=args.reference, mask=args.mask, device=args.device, precision=args.precision, seed=args.seed, figure=not args.no_figure,
        )


def prepare_session(job: RegisterJob) -> tuple[RegistrationSession, list]:
    """Read and check every input and box; build the model and the session (nothing written yet)."""
    check_output_folder(job.out)
    if job.iso < 0:
        raise InputError("--iso must be >= 0")
    if job.model and job.channels:
        raise InputError("--channels describes an untrained network; it cannot be combined with --model")
    inputs = open_inputs(job.fixed, job.moving, job.reference, job.truth, job.mask)
    net, source = build_model(job.model, ModelConfig(channels=tuple(job.channels)) if job.channels else None)
    log.info("model: %s, channels %s", source, net.config.channels)
    session = RegistrationSession(**inputs, net=net, grid_shape=job.grid, seed=job.seed, device=job.device,
                                  loss=job.loss, model_source=source, precision=job.precision)
    boxes = [session.box_from_ras(b) for b in job.boxes_ras] + [session.box_from_fixed_index(b) for b in job.boxes_ijk]
    return session, boxes


def run_register_job(job: RegisterJob, progress_bar: bool = True, cancel: CancelToken | None = None):
    """Run the whole job; returns the session and the written paths. Prints the step table."""
    session, boxes = prepare_session(job)
    out = Path(job.out)
    start_session_folder(session, out / "session")
    with step_progress(progress_bar) as progress:
        session.general()
        if job.iso:
            session.iso(job.iso, progress=progress, cancel=cancel)
        for box in boxes:
            session.rso(box, job.rso, progress=progress, cancel=cancel)
    paths = write_results(session, out, figure=job.figure)
    print(format_table([summary_row(r) for r in session.history]))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return session, paths


def start_session_folder(session: RegistrationSession, folder: Path) -> None:
    """Give a checked session its folder; a new run replaces a previous run's session there."""
    if folder.exists():
        log.info("replacing the previous session in %s", folder)
        shutil.rmtree(folder)
    session.attach_folder(folder)


class step_progress:
    """A tqdm bar per optimisation step on a terminal (log lines when quiet or piped), fed by callbacks."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.step = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()

    def __call__(self, update: Progress) -> None:
        if update.step != self.step or update.iteration == 1:
            self._close()
            self.step = update.step
            if self.enabled:
                from tqdm import tqdm

                self.bar = tqdm(total=update.iterations, desc=update.step.upper(), unit="it", leave=True)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{update.loss:.5f}")
        elif update.iteration % max(1, update.iterations // 10) == 0:
            log.info("%s %d/%d loss %.5f, %.0f s left", update.step.upper(), update.iteration,
                     update.iterations, update.loss, update.eta)

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
