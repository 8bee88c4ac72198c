"""The paper's three-step workflow (Algorithm 1) as one call: general -> ISO -> RSO per box.

``EngineSettings`` is the one place a session is built from a user's choices (the CLI, the worker,
the demo, the benchmark and batch runs all use it). ``RegisterJob`` is one registration of a
pair; ``run_register_job`` checks every input before anything is written, so bad input leaves no
partial output.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rso.core.initial import INITIAL_TRANSFORM, read_initial_transform, write_transform
from rso.core.labels import LabelInput, check_labels_on
from rso.core.landmarks import pair_landmarks, read_landmarks
from rso.core.losses import LossConfig
from rso.core.model import ModelConfig, RegistrationNet, build_model
from rso.core.optimize import CancelToken, ProgressCallback
from rso.core.pair import Normalisation, read_fit_mask
from rso.core.results import check_output_folder, write_results
from rso.core.session import RegistrationSession, RSOSettings, open_inputs
from rso.errors import InputError
from rso.options import (
    ALLOW_NON_CT,
    DEFAULT_DEVICE,
    DEFAULT_ISO_ITERATIONS,
    DEFAULT_ISO_MATCH_ARTEFACTS,
    DEFAULT_PREALIGN,
    DEFAULT_PRECISION,
    DEFAULT_SEED,
    DEFAULT_WRITE_INVERSE,
    PREALIGNMENTS,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """Which network, on which grid, on which device, in which arithmetic, with which loss and seed."""

    model: str | None = None  # a checkpoint; None: the bundled general model
    channels: tuple[int, ...] | None = None  # an untrained network of this width instead (tests, demos)
    grid: tuple[int, int, int] | None = None  # None: the model's own training grid
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    seed: int = DEFAULT_SEED
    loss: LossConfig = field(default_factory=LossConfig)
    # Register images that do not look like CT in HU, on purpose: normalised from their own percentiles.
    allow_non_ct: bool = ALLOW_NON_CT

    def __post_init__(self):
        if self.model and self.channels:
            raise InputError(
                "channels describe an untrained network; they cannot be combined with a model checkpoint"
            )

    @classmethod
    def from_dict(cls, data: dict) -> EngineSettings:
        """The settings ``dataclasses.asdict`` wrote (e.g. sent as JSON to another process)."""
        data = dict(data)
        for name in ("channels", "grid"):
            data[name] = tuple(data[name]) if data.get(name) else None
        return cls(**{**data, "loss": LossConfig(**data.get("loss", {}))})

    def network(self) -> tuple[RegistrationNet, str]:
        """The starting network and a one-line description of where it came from.

        An untrained network's weights come from the seed, so that the same settings give the
        same run in any process (a local and a remote worker alike); the global RNG is left as it was.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net, source = build_model(
                self.model, ModelConfig(channels=tuple(self.channels)) if self.channels else None
            )
        log.info("model: %s, channels %s", source, net.config.channels)
        return net, source

    def session(
        self,
        inputs: dict,
        folder: str | Path | None = None,
        network: tuple[RegistrationNet, str] | None = None,
    ) -> RegistrationSession:
        """A session on ``inputs`` (``open_inputs``' keywords, and ``fit_mask``); ``network`` is copied, never
        shared. An image that does not look like CT is refused unless ``allow_non_ct`` (``Normalisation``)."""
        normalisation = Normalisation.choose(inputs["fixed"], inputs["moving"], self.allow_non_ct)
        net, source = (copy.deepcopy(network[0]), network[1]) if network else self.network()
        return RegistrationSession(
            **inputs,
            net=net,
            grid_shape=self.grid,
            folder=folder,
            seed=self.seed,
            device=self.device,
            loss=self.loss,
            model_source=source,
            precision=self.precision,
            normalisation=normalisation,
        )


@dataclass
class RegisterJob:
    """One pair through the three steps, and where its results go."""

    fixed: str
    moving: str
    out: str
    engine: EngineSettings = field(default_factory=EngineSettings)
    iso: int = DEFAULT_ISO_ITERATIONS
    iso_match_artefacts: bool = (
        DEFAULT_ISO_MATCH_ARTEFACTS  # where both geometries are known (rso.core.projection)
    )
    boxes_ras: list[list[float]] = field(default_factory=list)
    boxes_ijk: list[list[int]] = field(default_factory=list)
    rso: RSOSettings = field(default_factory=RSOSettings)
    truth: str | None = None
    reference: str | None = None
    mask: str | None = None  # where metrics are measured (--metrics-mask)
    fit_mask: str | None = None  # where ISO's and RSO's similarity is measured (--fit-mask)
    figure: bool = True
    labels: str | None = None  # a label map drawn on the moving image, carried onto the fixed one
    labels_colors: str | None = (
        None  # its names and colours (a colour-table file), unless a .seg.nrrd has them
    )
    labels_reference: str | None = None  # the same labels drawn on the fixed image: Dice and HD95
    fixed_geometry: str | None = None  # RTK geometry files of phase-binned CBCTs (rso.core.projection)
    moving_geometry: str | None = None
    placement: str | None = None  # an ITK affine: RTK frame -> LPS (default: rso.core.projection.Placement)
    # DICOM folders holding several series: which one (series instance UID, or index as `series` lists)
    fixed_series: str | None = None
    moving_series: str | None = None
    # Landmarks placed on the fixed and moving images (rso.core.landmarks' formats), paired by "order" or
    # "label": their TRE after each step goes into the report.
    landmarks_fixed: str | None = None
    landmarks_moving: str | None = None
    landmarks_pairing: str = "order"
    # The initial transform T0 (rso.core.initial; fixed -> moving points): an ITK transform file, or a
    # pre-alignment that computes it ("rigid"); the results include it. ``inverse``: also the moving ->
    # fixed field.
    initial_transform: str | None = None
    prealign: str | None = DEFAULT_PREALIGN
    inverse: bool = DEFAULT_WRITE_INVERSE

    def prepare(self) -> tuple[RegistrationSession, list, LabelInput | None, tuple | None]:
        """Read and check every input, box, label map and landmark; build the session (nothing written
        yet). Returns the session, the boxes, the labels and the paired landmarks (or None)."""
        check_output_folder(self.out)
        if self.iso < 0:
            raise InputError("ISO iterations must be >= 0")
        self._check_alignment()
        if (self.labels_colors or self.labels_reference) and not self.labels:
            raise InputError("label colours and a reference label map need a label map (--labels)")
        inputs = open_inputs(
            self.fixed,
            self.moving,
            self.reference,
            self.truth,
            self.mask,
            self.fixed_geometry,
            self.moving_geometry,
            self.placement,
            series=(self.fixed_series, self.moving_series),
        )
        inputs["fit_mask"] = read_fit_mask(self.fit_mask)
        inputs[INITIAL_TRANSFORM] = self._initial_transform(inputs)
        labels = (
            LabelInput.read(self.labels, self.labels_colors, self.labels_reference) if self.labels else None
        )
        if labels is not None:
            check_labels_on(labels.image, inputs["moving"])
        landmarks = self._read_landmarks(inputs)
        session = self.engine.session(inputs)
        boxes = [session.box_from_ras(b) for b in self.boxes_ras] + [
            session.box_from_fixed_index(b) for b in self.boxes_ijk
        ]
        return session, boxes, labels, landmarks

    def _check_alignment(self) -> None:
        if self.prealign is not None and self.prealign not in PREALIGNMENTS:
            raise InputError(
                f"pre-alignment {self.prealign!r} is unknown; choose from {', '.join(PREALIGNMENTS)}"
            )
        if self.prealign is not None and self.initial_transform:
            raise InputError("give an initial transform or a pre-alignment (--prealign), not both")

    def _initial_transform(self, inputs: dict):
        """T0 (a SimpleITK transform, fixed -> moving points) from the file or the pre-alignment, or None."""
        if self.initial_transform:
            return read_initial_transform(self.initial_transform)
        if self.prealign == "rigid":
            from rso.core.prealign import rigid_prealignment

            return rigid_prealignment(inputs["fixed"], inputs["moving"])
        return None

    def _read_landmarks(self, inputs: dict) -> tuple | None:
        """The paired (fixed, moving) landmarks, or None; DIR-Lab indices are on each image."""
        if not (self.landmarks_fixed or self.landmarks_moving):
            return None
        if not (self.landmarks_fixed and self.landmarks_moving):
            raise InputError("landmarks: give the fixed and the moving image's landmarks, or neither")
        fixed = read_landmarks(self.landmarks_fixed, inputs["fixed"])
        moving = read_landmarks(self.landmarks_moving, inputs["moving"])
        return pair_landmarks(fixed, moving, self.landmarks_pairing)


def run_register_job(
    job: RegisterJob, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
) -> tuple[RegistrationSession, dict[str, Path]]:
    """Run the whole job; returns the session and the written paths."""
    session, boxes, labels, landmarks = job.prepare()
    log.info("%s", session.pair.matching_status(job.iso_match_artefacts or job.rso.match_artefacts))
    out = Path(job.out)
    start_session_folder(session, out / "session")
    session.general()
    if job.iso:
        session.iso(job.iso, match_artefacts=job.iso_match_artefacts, progress=progress, cancel=cancel)
    for number, box in enumerate(boxes, 1):
        record = session.rso(box, job.rso, progress=progress, cancel=cancel)
        if record.declined:
            log.warning(
                "RSO on box %d (%s RAS mm) declined, the field is unchanged: %s",
                number,
                box.ras_corners,
                record.declined,
            )
    paths = write_results(
        session, out, figure=job.figure, labels=labels, landmarks=landmarks, inverse=job.inverse
    )
    if job.prealign is not None:  # what the pre-alignment found, for other tools (fixed -> moving points)
        paths["prealign"] = write_transform(session.pair.initial_transform, out / "prealign.tfm")
    else:  # one left by an earlier run in this folder would not belong to this registration
        (out / "prealign.tfm").unlink(missing_ok=True)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return session, paths


def start_session_folder(session: RegistrationSession, folder: Path) -> None:
    """Give a checked session its folder; a new run replaces a previous run's session there."""
    if folder.exists():
        log.info("replacing the previous session in %s", folder)
        shutil.rmtree(folder)
    session.attach_folder(folder)
