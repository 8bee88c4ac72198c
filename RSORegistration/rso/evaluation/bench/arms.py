"""The arms of the paper's experiment on one case: every method scored by the same function in the same box.

Per (case, box): the general model, ISO-long, ISO-short, ISO-short + RSO in each mode, and the
peers. ISO-short runs once per case and each RSO arm is undone (bit-exact) before the next, so
every RSO arm starts from the same state. Every arm is scored by ``RegistrationSession.metrics``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.imageio import write_bytes_atomically
from rso.core.native_grid import native_field, rewarp
from rso.core.session import RegistrationSession
from rso.core.workflow import build_network, start_session
from rso.errors import InputError
from rso.evaluation.bench.cases import Case
from rso.evaluation.bench.contours import CaseLabels, contour_scores
from rso.evaluation.bench.measure import Measured, merged_memory
from rso.evaluation.bench.peer_process import PeerProcess
from rso.evaluation.bench.plan import (
    NO_GEOMETRY_ISO_ARM,
    PAPER_ARM,
    PEER_ARMS,
    RECORD_FORMAT,
    RSO_ARMS,
    START_OF,
    WRONG_GEOMETRY_ISO_ARM,
    WRONG_GEOMETRY_RSO_ARM,
    BenchPlan,
    default_arm,
    labels,
    rso_settings,
    wrong_geometry_for,
    wrong_geometry_label,
)
from rso.settings import EngineSettings

log = logging.getLogger(__name__)


class Model:
    """One network, copied into every session, so that every arm starts from the same weights."""

    def __init__(self, checkpoint: str | None, channels: tuple[int, ...] | None, plan: BenchPlan):
        self.plan = plan
        self.engine = EngineSettings(
            model=checkpoint,
            channels=channels,
            grid=plan.grid,
            device=plan.device,
            precision=plan.precision,
            seed=plan.seed,
            network_similarity=plan.similarity,
            network_smoothness=plan.smoothness,
        )
        self.network = build_network(self.engine)
        self.net, self.source = self.network

    def session(self, inputs: dict, grid=None, precision: str | None = None) -> RegistrationSession:
        engine = replace(
            self.engine,
            grid=grid or self.engine.grid or self.net.config.grid,
            precision=precision or self.engine.precision,
        )
        return start_session(engine, inputs, network=self.network)

    def to_dict(self) -> dict:
        return {"source": self.source, "config": self.net.config.to_dict()}


@dataclass
class ArmResult:
    """One arm on one (case, box): the metrics and what it cost."""

    arm: str
    metrics: dict
    seconds: float  # from the input images to this arm's field (the whole pipeline)
    peak_memory: dict
    step_seconds: float | None = None  # the arm's last step alone (the RSO step, the peer's run)
    latency_seconds: float | None = None  # box handed over -> warped and difference images ready
    export_seconds: float | None = None
    loss: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    declined: str | None = None  # the guard declined the RSO step: the field is its start's
    guard: dict | None = None
    contours: dict = field(default_factory=dict)  # label name -> Dice, HD95 of the labels the field carries


@dataclass
class CaseRun:
    """The shared state of one case: its inputs, the ISO-long and ISO-short sessions, their timings."""

    case: Case
    inputs: dict
    iso_long: RegistrationSession
    iso_short: RegistrationSession
    timings: dict  # step name -> Measured
    labels: CaseLabels | None = None
    contours: dict = field(default_factory=dict)  # the box-independent arms' contour scores
    # general -> ISO-short given no projection geometry (None where the case has none): a Slicer user's path
    no_geometry: RegistrationSession | None = None
    # general -> ISO-short with the moving image's geometry slightly wrong, and which perturbation it got
    # (plan.wrong_geometry; None where the case has no geometry): a user whose geometry file is a little off
    wrong_geometry: RegistrationSession | None = None
    perturbation: str | None = None
    # the general model's field alone, ISO never run: where GENERAL_RSO_ARM starts
    general: RegistrationSession | None = None

    def paths(self) -> dict[str, RegistrationSession]:
        """The ISO-short arm of each other path the case has (no geometry, wrong geometry): its session."""
        sessions = {NO_GEOMETRY_ISO_ARM: self.no_geometry, WRONG_GEOMETRY_ISO_ARM: self.wrong_geometry}
        return {arm: session for arm, session in sessions.items() if session is not None}

    def start(self, rso_arm: str) -> tuple[str, RegistrationSession | None]:
        """The arm an RSO arm starts from (an ISO-short arm, or the general model) and its session (None:
        the case lacks that path)."""
        iso_arm = START_OF.get(rso_arm, "iso_short")
        sessions = {"iso_short": self.iso_short, "general": self.general, **self.paths()}
        return iso_arm, sessions.get(iso_arm)

    def path_settings(self, iso_arm: str) -> dict:
        """What the records of a path add to their settings: the wrong geometry's perturbation."""
        return {"wrong_geometry": self.perturbation} if iso_arm == WRONG_GEOMETRY_ISO_ARM else {}


def other_path_inputs(inputs: dict, plan: BenchPlan, position: int) -> tuple[dict, str | None]:
    """ISO-short arm -> the inputs of each other path the case has, and the wrong geometry's perturbation.

    Where the case has projection geometry: none (no geometry) and, with ``plan.wrong_geometry``, the moving
    geometry slightly wrong (the perturbation of the case's ``position`` in the plan, ``wrong_geometry_for``).
    A TV case has no wrong-geometry path: its phases are never matched. Its no-geometry path is a session
    of its own: with the files the guarded ISO keeps the field on TV phases, without them the axis share
    judges ISO's fit (docs/decisions.md, "ISO on TV phases").
    """
    if inputs.get("fixed_geometry") is None:
        return {}, None
    moving = inputs.get("moving_geometry")  # a PhaseScan
    paths = {NO_GEOMETRY_ISO_ARM: {**inputs, "fixed_geometry": None, "moving_geometry": None}}
    if not plan.wrong_geometry or moving is None or moving.reconstruction == "tv":
        return paths, None
    wrong = wrong_geometry_for(position, moving.geometry)
    if wrong is None:
        log.info("no wrong-geometry arms: case %d's perturbation does not apply to its geometry", position)
        return paths, None
    paths[WRONG_GEOMETRY_ISO_ARM] = {**inputs, "moving_geometry": replace(moving, geometry=wrong[1])}
    return paths, wrong[0]


def prepare_case(case: Case, model: Model, plan: BenchPlan, progress, position: int = 0) -> CaseRun:
    """general -> ISO-long in one session; general -> ISO-short (the RSO arms' start) in another; the same
    ISO-short without geometry and with a wrong one (``position``: the case's place in the plan's list);
    the general model alone in a last one."""
    inputs = case.inputs()
    timings = {}
    long_arm = model.session(inputs)
    with Measured(long_arm.device) as timings["general"]:
        long_arm.general()
    with Measured(long_arm.device) as timings["iso_long"]:
        long_arm.iso(plan.iso_long, progress=progress)
    short_arm = model.session(inputs)
    short_arm.general()
    with Measured(short_arm.device) as timings["iso_short"]:
        short_arm.iso(plan.iso_short, progress=progress)
    path_inputs, perturbation = other_path_inputs(inputs, plan, position)
    paths = {}
    for arm, other_inputs in path_inputs.items():
        paths[arm] = model.session(other_inputs)
        paths[arm].general()
        with Measured(paths[arm].device) as timings[arm]:
            paths[arm].iso(plan.iso_short, progress=progress)
    general = model.session(inputs)
    general.general()
    labels = CaseLabels.of(case.folder, case.moving_phase) if plan.contours else None
    fields = {
        "general": native_field(short_arm, 1),
        "iso_long": native_field(long_arm),
        "iso_short": native_field(short_arm),
        **{arm: native_field(session) for arm, session in paths.items()},
    }
    contours = {
        arm: contour_scores(labels, field_image, short_arm.fixed) for arm, field_image in fields.items()
    }
    return CaseRun(
        case,
        inputs,
        long_arm,
        short_arm,
        timings,
        labels,
        contours,
        paths.get(NO_GEOMETRY_ISO_ARM),
        paths.get(WRONG_GEOMETRY_ISO_ARM),
        perturbation if WRONG_GEOMETRY_ISO_ARM in paths else None,
        general,
    )


def fixed_arms(run: CaseRun, box) -> list[ArmResult]:
    """The arms that do not depend on the box, scored in it: general, ISO-long, ISO-short."""
    session, t = run.iso_short, run.timings
    fields = {
        "general": session.state_field(1),
        "iso_long": run.iso_long.field_voxels,
        "iso_short": session.field_voxels,
    }
    cost = {
        "general": (t["general"],),
        "iso_long": (t["general"], t["iso_long"]),
        "iso_short": (t["general"], t["iso_short"]),
    }
    steps = {
        "general": run.iso_long.history[0],
        "iso_long": run.iso_long.history[1],
        "iso_short": session.history[1],
    }
    for arm, other in run.paths().items():
        fields[arm] = other.field_voxels
        cost[arm] = (t["general"], t[arm])
        steps[arm] = other.history[1]
    return [
        ArmResult(
            arm,
            session.metrics(fields[arm], box),
            sum(m.seconds for m in cost[arm]),
            merged_memory(*cost[arm]),
            step_seconds=cost[arm][-1].seconds,
            loss=steps[arm].loss,
            settings={**steps[arm].params, **run.path_settings(arm)},
            contours=run.contours[arm],
        )
        for arm in fields
    ]


def rso_arm(run: CaseRun, box, arm: str, plan: BenchPlan, progress, figure_path: Path | None) -> ArmResult:
    """ISO-short (or the arm's other start, ``CaseRun.start``) + RSO on the box in one mode, then the
    re-warp; undone afterwards (bit-exact).

    A step the guard declines leaves the start's field, which is what the arm is scored on; its latency
    is the step alone (the views do not change).
    """
    iso_arm, session = run.start(arm)
    settings = rso_settings(arm, plan)
    with Measured(session.device) as step:
        record = session.rso(box, settings, progress=progress)
    export = Measured(session.device)
    contours = run.contours[iso_arm]
    if record.accepted:
        with export:
            rewarp(session)
        contours = contour_scores(run.labels, native_field(session), session.fixed)
        if figure_path is not None:
            paper_figure(run, box, plan, figure_path, record)
        session.undo()
    before = (run.timings["general"],) + ((run.timings[iso_arm],) if iso_arm != "general" else ())
    return ArmResult(
        arm,
        record.metrics,
        sum(m.seconds for m in before) + step.seconds,
        merged_memory(*before, step, export),
        step_seconds=step.seconds,
        latency_seconds=step.seconds + export.seconds,
        export_seconds=export.seconds,
        loss=record.loss,
        settings=asdict(settings) | run.path_settings(iso_arm),
        declined=record.declined,
        guard=record.guard,
        contours=contours,
    )


def paper_figure(run: CaseRun, box, plan: BenchPlan, path: Path, record) -> None:
    """The Fig. 2/3-style figure (figures.comparison_figure), with the demo's rows."""
    from rso.evaluation.demo import DemoPlan, comparison_rows
    from rso.evaluation.figures import comparison_figure

    demo_plan = DemoPlan(
        iso_long=plan.iso_long, iso_short=plan.iso_short, rso=plan.rso, box_size_mm=plan.box_size_mm
    )
    rows = comparison_rows(run.iso_long, run.iso_short, box, demo_plan, record)
    comparison_figure(run.iso_long, run.iso_short, box, rows, path)


def peer_field_voxels(session: RegistrationSession, field_image: sitk.Image) -> np.ndarray:
    """A peer's LPS-mm field on the model grid, in the session's voxel units: scored like every arm."""
    return session.grid.mm_to_voxels(session.grid.resample_field(field_image))


def whole_image_peers(run: CaseRun, plan: BenchPlan, process: PeerProcess) -> dict[str, tuple]:
    """elastix B-spline and ANTs SyN on the whole pair, once per case, in the peer process: arm ->
    (voxels, PeerCost, PeerResult, contours)."""
    import rso.evaluation.peers as peers

    results = {}
    for arm, package, settings in (
        ("elastix_bspline", "elastix", plan.elastix),
        ("ants_syn", "ants", plan.ants),
    ):
        if not peers.available(package):
            log.warning(
                "%s skipped: %s is not installed (%s)", arm, peers.PACKAGES[package], peers.INSTALL_HINT
            )
            continue
        results[arm] = _run_peer(run, process, package, settings)
    return results


def _run_peer(run: CaseRun, process: PeerProcess, package: str, settings, box=None) -> tuple:
    result, cost = process.run(package, run.inputs["fixed"], run.inputs["moving"], settings, box)
    contours = contour_scores(run.labels, result.field, run.inputs["fixed"])
    return peer_field_voxels(run.iso_short, result.field), cost, result, contours


def masked_peer(run: CaseRun, box, plan: BenchPlan, process: PeerProcess) -> tuple | None:
    import rso.evaluation.peers as peers

    if not peers.available("elastix"):
        return None
    return _run_peer(run, process, "elastix", plan.elastix, box)


def peer_arm(run: CaseRun, box, arm: str, outcome: tuple) -> ArmResult:
    field_voxels, cost, result, contours = outcome
    settings = result.settings | ({"notes": result.extra} if result.extra else {})
    return ArmResult(
        arm,
        run.iso_short.metrics(field_voxels, box),
        cost.seconds,
        cost.memory,
        step_seconds=cost.seconds,
        settings=settings,
        contours=contours,
    )


def case_boxes(session: RegistrationSession, plan: BenchPlan, seed: int) -> list[tuple[str, int, object]]:
    """(kind, index, box) for every box kind of the plan, chosen on the ISO-short field."""
    from rso.evaluation.box_kinds import pick_boxes

    boxes = [
        (kind, index, box)
        for kind, count in plan.boxes
        for index, box in enumerate(pick_boxes(session, kind, count, plan.box_size_mm, seed=seed))
    ]
    if not boxes:
        raise InputError(f"no {plan.box_size_mm} mm box fits inside the lungs")
    return boxes


def run_case(
    case: Case,
    model: Model,
    plan: BenchPlan,
    out: Path,
    context: dict,
    progress,
    process: PeerProcess,
    position: int = 0,
) -> list[dict]:
    """Every arm on every box of one case (the peers in ``process``; ``position``: the case's place in the
    plan's list, which picks its wrong geometry); returns the records (also written as JSON)."""
    log.info(
        "case %s: %s <- %s", case.name, f"cbct_phase{case.fixed_phase}", f"cbct_phase{case.moving_phase}"
    )
    run = prepare_case(case, model, plan, progress, position)
    boxes = case_boxes(run.iso_short, plan, case.seed or 0)
    whole_peers = whole_image_peers(run, plan, process) if plan.peers else {}
    records, figure_done = [], False
    for kind, index, box in boxes:
        costly = kind in plan.costly_kinds
        results = fixed_arms(run, box)
        for arm in RSO_ARMS:
            if (arm == PAPER_ARM and not (costly and plan.paper_arm)) or run.start(arm)[1] is None:
                continue
            figure = None
            if plan.figures and not figure_done and kind == "misaligned" and arm == default_arm():
                figure, figure_done = out / "figures" / f"case_{case.name}.png", True
            results.append(rso_arm(run, box, arm, plan, progress, figure))
        if plan.peers:
            masked = masked_peer(run, box, plan, process) if costly else None
            outcomes = {**whole_peers, **({"elastix_bspline_box_mask": masked} if masked else {})}
            results += [peer_arm(run, box, arm, outcomes[arm]) for arm in PEER_ARMS if arm in outcomes]
        box_info = {
            "kind": kind,
            "index": index,
            "size_mm": plan.box_size_mm,
            "ras": box.ras_corners,
            "voxels": box.voxels.to_dict(),
        }
        for result in results:
            records.append(write_arm_record(out, case, box_info, result, plan, context))
    return records


def write_arm_record(
    out: Path, case: Case, box_info: dict, result: ArmResult, plan: BenchPlan, context: dict
) -> dict:
    record = {
        "format": RECORD_FORMAT,
        "kind": "arm",
        "case": case.to_dict(),
        "box": box_info,
        "arm": result.arm,
        "label": record_label(result, plan),
        **asdict(result),
        **context,
    }
    write_json(out / f"arm_{case.name}_{box_info['kind']}{box_info['index']}_{result.arm}.json", record)
    return record


def record_label(result: ArmResult, plan: BenchPlan) -> str:
    """The arm's label; a wrong-geometry arm's names its case's perturbation."""
    label = labels(plan)[result.arm]
    if result.arm in (WRONG_GEOMETRY_ISO_ARM, WRONG_GEOMETRY_RSO_ARM):
        return wrong_geometry_label(label, result.settings["wrong_geometry"])
    return label


def write_json(path: Path, data: dict) -> Path:
    return write_bytes_atomically(json.dumps(data, indent=1).encode(), path)
