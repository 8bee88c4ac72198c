"""Speed and memory: full vs crop vs direct at each grid and box size, side by side in one process."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rso.core.native_grid import rewarp
from rso.core.session import RegistrationSession
from rso.errors import InputError
from rso.evaluation.bench.arms import Model, write_json
from rso.evaluation.bench.cases import Case
from rso.evaluation.bench.measure import Measured, merged_memory
from rso.evaluation.bench.plan import RECORD_FORMAT, BenchPlan
from rso.settings import RSOSettings

log = logging.getLogger(__name__)


SPEED_MODES = ("native", "direct", "crop", "full")


def speed_section(case: Case, model: Model, plan: BenchPlan, out: Path, context: dict) -> list[dict]:
    """Every RSO mode at each grid, box size and precision, side by side in one process.

    Native RSO works at the fixed image's resolution and runs in fp32 whatever the precision, so it
    is measured once per box size; the network modes at every grid in fp32 and in bf16 (where the
    CPU has it), the comparison a workstation without bf16 needs.
    """
    inputs = case.inputs()
    records = []
    for grid, precision in [(g, p) for g in plan.speed_grids for p in plan.speed_precisions]:
        session = model.session(inputs, grid=tuple(grid), precision=precision)
        if session.precision != precision:
            log.warning("speed: %s is not native on this CPU; skipped", precision)
            continue
        with Measured(session.device) as forward:
            session.general()
        for size in plan.speed_box_sizes_mm:
            box = _speed_box(session, size)
            if box is None:
                continue
            for mode in SPEED_MODES:
                if mode == "native" and (
                    grid != plan.speed_grids[0] or precision != plan.speed_precisions[0]
                ):
                    continue
                # The run's context first: this record's own grid replaces the experiment's.
                record = {
                    **context,
                    "format": RECORD_FORMAT,
                    "kind": "speed",
                    "case": case.to_dict(),
                    "grid": list(grid),
                    "precision": precision,
                    "box_size_mm": size,
                    "box_voxels": list(box.voxels.shape),
                    "forward_seconds": forward.seconds,
                    **speed_measurement(session, box, mode, plan),
                }
                name = f"speed_{'x'.join(map(str, grid))}_{precision}_box{size:g}mm_{mode}.json"
                records.append(record)
                write_json(out / name, record)
    return records


def _speed_box(session: RegistrationSession, size_mm: float):
    from rso.evaluation.box_kinds import worst_residual_boxes

    try:
        boxes = worst_residual_boxes(session, 1, size_mm)
    except InputError as exc:
        log.warning("speed: %s mm box skipped at grid %s: %s", size_mm, session.grid.shape, exc)
        return None
    return boxes[0] if boxes else None


def speed_measurement(session: RegistrationSession, box, mode: str, plan: BenchPlan) -> dict:
    """Seconds per iteration (median after the first), per step, and the projected full-length step."""
    from rso.core.optimize import crop_window

    elapsed: list[float] = []
    full_length = RSOSettings(mode=mode).iterations if mode == "native" else plan.rso
    compose = "global" if mode == "full" else "local"
    settings = RSOSettings.unguarded(iterations=plan.speed_iterations, mode=mode, compose=compose)
    with Measured(session.device) as call:
        record = session.rso(box, settings, progress=lambda update: elapsed.append(update.elapsed))
    export = Measured(session.device)
    # What the step optimised over: the native window (at the fixed image's spacing), the crop, or the grid.
    window_shape = list(session.grid.shape)
    if record.accepted:
        if mode == "native":
            window_shape = list(session.state.patches[-1].grid.shape)
        with export:
            rewarp(session)
        session.undo()
    per_iteration = np.diff([0.0, *elapsed])
    steady = per_iteration[1:] if len(per_iteration) > 1 else per_iteration
    overhead = record.seconds - float(per_iteration.sum())  # copies, search, final prediction, composition
    metrics_seconds = call.seconds - record.seconds
    projected = overhead + full_length * float(np.median(steady))
    margin = session.blend_margin_voxels(settings.blend_margin_mm)
    if mode in ("crop", "direct"):
        window_shape = list(crop_window(box.voxels, session.field_voxels, session.grid.shape, margin).shape)
    return {
        "mode": mode,
        "compose": compose,
        "iterations": plan.speed_iterations,
        "seconds_per_iteration": float(np.median(steady)),
        "first_iteration_seconds": float(per_iteration[0]),
        "step_seconds": record.seconds,
        "metrics_seconds": metrics_seconds,
        "export_seconds": export.seconds,
        "overhead_seconds": overhead,
        "projected_iterations": full_length,
        "projected_step_seconds": projected,
        "projected_latency_seconds": projected + metrics_seconds + export.seconds,
        "window_voxels": window_shape,
        "peak_memory": merged_memory(call, export),
    }
