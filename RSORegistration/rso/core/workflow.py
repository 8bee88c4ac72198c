"""The paper's three-step workflow (Algorithm 1) as one call: general -> ISO -> RSO per box.

``start_session`` is the one place a session is built from a user's choices (rso.settings; the
CLI, the worker, the demo, the benchmark and batch runs all use it). ``RegisterJob`` is one
registration of a pair; ``run_register_job`` checks every input before anything is written, so bad
input leaves no partial output.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rso.core.initial import write_transform
from rso.core.inputs import read_inputs
from rso.core.labels import LabelInput, check_labels_on
from rso.core.landmarks import pair_landmarks, read_landmarks
from rso.core.model import ModelConfig, RegistrationNet, build_model
from rso.core.optimize import CancelToken, ProgressCallback
from rso.core.pair import Normalisation
from rso.core.results import check_output_folder, check_outputs, write_results
from rso.core.session import RegistrationSession
from rso.errors import InputError
from rso.options import DEFAULT_OUTPUTS, DEFAULT_WRITE_INVERSE
from rso.settings import EngineSettings, ISOSettings, PairInputs, RSOSettings

log = logging.getLogger(__name__)


def build_network(engine: EngineSettings) -> tuple[RegistrationNet, str]:
    """The starting network and a one-line description of where it came from.

    An untrained network's weights come from the seed, so that the same settings give the same run
    in any process (a local and a remote worker alike); the global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(engine.seed)
        config = ModelConfig(channels=tuple(engine.channels)) if engine.channels else None
        net, source = build_model(engine.model, config)
    log.info("model: %s, channels %s", source, net.config.channels)
    return net, source


def start_session(
    engine: EngineSettings,
    inputs: dict,
    folder: str | Path | None = None,
    network: tuple[RegistrationNet, str] | None = None,
) -> RegistrationSession:
    """A session on read inputs (``PairInputs.read``); ``network`` is copied, never shared. An image
    that does not look like CT is refused unless ``allow_non_ct`` (``Normalisation``)."""
    normalisation = Normalisation.choose(inputs["fixed"], inputs["moving"], engine.allow_non_ct)
    net, source = (copy.deepcopy(network[0]), network[1]) if network else build_network(engine)
    return RegistrationSession(
        inputs, net, engine=engine, folder=folder, model_source=source, normalisation=normalisation
    )


@dataclass
class RegisterJob:
    """One pair through the three steps, and where its results go."""

    inputs: PairInputs
    out: str
    engine: EngineSettings = field(default_factory=EngineSettings)
    iso: ISOSettings = field(default_factory=ISOSettings)
    rso: RSOSettings = field(default_factory=RSOSettings)
    boxes_ras: list[list[float]] = field(default_factory=list)
    boxes_ijk: list[list[int]] = field(default_factory=list)
    figure: bool = True
    labels: str | None = None  # a label map drawn on the moving image, carried onto the fixed one
    # its names and colours (a colour-table file), unless a .seg.nrrd has them
    labels_colors: str | None = None
    labels_reference: str | None = None  # the same labels drawn on the fixed image: Dice and HD95
    # Landmarks placed on the fixed and moving images (rso.core.landmarks' formats), paired by "order" or
    # "label": their TRE after each step goes into the report.
    landmarks_fixed: str | None = None
    landmarks_moving: str | None = None
    landmarks_pairing: str = "order"
    inverse: bool = DEFAULT_WRITE_INVERSE  # also the moving -> fixed field
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS  # besides report.json and transform.h5 (results.OUTPUTS)

    def prepare(self) -> tuple[RegistrationSession, list, LabelInput | None, tuple | None]:
        """Read and check every input, box, label map and landmark; build the session (nothing written
        yet). Returns the session, the boxes, the labels and the paired landmarks (or None)."""
        check_output_folder(self.out)
        check_outputs(self.outputs)
        if (self.labels_colors or self.labels_reference) and not self.labels:
            raise InputError("label colours and a reference label map need a label map (--labels)")
        inputs = read_inputs(self.inputs)
        labels = (
            LabelInput.read(self.labels, self.labels_colors, self.labels_reference) if self.labels else None
        )
        if labels is not None:
            check_labels_on(labels.image, inputs["moving"])
        landmarks = self._read_landmarks(inputs)
        session = start_session(self.engine, inputs)
        boxes = [session.box_from_ras(b) for b in self.boxes_ras] + [
            session.box_from_fixed_index(b) for b in self.boxes_ijk
        ]
        return session, boxes, labels, landmarks

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
    log.info("%s", session.pair.matching_status(job.iso.match_artefacts or job.rso.match_artefacts))
    out = Path(job.out)
    start_session_folder(session, out / "session")
    session.general()
    if job.iso.iterations:
        session.iso(job.iso, progress=progress, cancel=cancel)
    declined = []
    for number, box in enumerate(boxes, 1):
        record = session.rso(box, job.rso, progress=progress, cancel=cancel)
        if record.declined:
            declined.append(record)
            log.warning(
                "RSO on box %d (%s RAS mm) declined, the field is unchanged: %s",
                number,
                box.ras_corners,
                record.declined,
            )
    paths = write_results(
        session,
        out,
        figure=job.figure,
        labels=labels,
        landmarks=landmarks,
        inverse=job.inverse,
        outputs=job.outputs,
        declined=declined,
    )
    if job.inputs.prealign is not None:  # what the pre-alignment found, for other tools (fixed -> moving)
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
