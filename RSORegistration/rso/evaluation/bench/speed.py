"""Speed and memory: full vs crop vs direct at each grid and box size, side by side in one process."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rso.core.results import rewarp
from rso.core.session import RegistrationSession, RSOSettings
from rso.errors import InputError
from rso.evaluation.bench.arms import Model, write_json
from rso.evaluation.bench.cases import Case
from rso.evaluation.bench.measure import Measured, merged_memory
from rso.evaluation.bench.plan import RECORD_FORMAT, RSO_ARMS, BenchPlan

log = logging.getLogger(__name__)


def speed_section(case: Case, model: Model, plan: BenchPlan, out: Path, context: dict) -> list[dict]:
    """full vs crop vs direct at each grid and box size, side by side in one process."""
    inputs = case.inputs()
    records = []
    for grid in plan.speed_grids:
        session = model.session(inputs, grid=tuple(grid))
        with Measured(session.device) as forward:
            session.general()
        for size in plan.speed_box_sizes_mm:
            box = _speed_box(session, size)
            if box is None:
                continue
            for arm, (mode, compose) in RSO_ARMS.items():
                # The run's context first: this record's own grid replaces the experiment's.
                record = {**context, "format": RECORD_FORMAT, "kind": "speed", "case": case.to_dict(),
                          "grid": list(grid), "box_size_mm": size, "box_voxels": list(box.voxels.shape), "arm": arm,
                          "forward_seconds": forward.seconds, **speed_measurement(session, box, mode, compose, plan)}
                name = f"speed_{'x'.join(map(str, grid))}_box{size:g}mm_{mode}.json"
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


def speed_measurement(session: RegistrationSession, box, mode: str, compose: str, plan: BenchPlan) -> dict:
    """Seconds per iteration (median after the first), per step, and the projected paper-length step."""
    from rso.core.optimize import crop_window

    elapsed: list[float] = []
    settings = RSOSettings(iterations=plan.speed_iterations, mode=mode, compose=compose)
    with Measured(session.device) as call:
        record = session.rso(box, settings, progress=lambda update: elapsed.append(update.elapsed))
    with Measured(session.device) as export:
        rewarp(session)
    session.undo()
    per_iteration = np.diff([0.0, *elapsed])
    steady = per_iteration[1:] if len(per_iteration) > 1 else per_iteration
    overhead = record.seconds - float(per_iteration.sum())  # copies, final prediction, composition
    metrics_seconds = call.seconds - record.seconds
    projected = overhead + plan.rso * float(np.median(steady))
    margin = session.blend_margin_voxels(settings.blend_margin_mm)
    window = None if mode == "full" else crop_window(box.voxels, session.field_voxels, session.grid.shape, margin)
    return {"mode": mode, "compose": compose, "iterations": plan.speed_iterations,
            "seconds_per_iteration": float(np.median(steady)), "first_iteration_seconds": float(per_iteration[0]),
            "step_seconds": record.seconds, "metrics_seconds": metrics_seconds, "export_seconds": export.seconds,
            "overhead_seconds": overhead, "projected_iterations": plan.rso, "projected_step_seconds": projected,
            "projected_latency_seconds": projected + metrics_seconds + export.seconds,
            "window_voxels": list(window.shape) if window else list(session.grid.shape),
            "peak_memory": merged_memory(call, export)}
