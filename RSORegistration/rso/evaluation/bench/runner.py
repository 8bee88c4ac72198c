"""Run the benchmark (the package docstring says what it measures): cases, arms, speed, summary."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from rso.core.imageio import write_bytes_atomically
from rso.core.results import check_output_folder
from rso.evaluation.bench.arms import Model, run_case, write_json
from rso.evaluation.bench.cases import resolve_cases
from rso.evaluation.bench.measure import library_versions, machine_info
from rso.evaluation.bench.peer_process import PeerProcess
from rso.evaluation.bench.plan import BenchPlan
from rso.evaluation.bench.report import summary_markdown, summary_plot
from rso.evaluation.bench.speed import speed_section
from rso.evaluation.bench.summary import summarise

log = logging.getLogger(__name__)


def run_bench(
    plan: BenchPlan, out: Path, checkpoint: str | None = None, channels=None, progress=None
) -> dict:
    """The whole benchmark; returns the summary (also written as summary.json and summary.md)."""
    out = check_output_folder(out)
    _clear_previous(out)
    threads = torch.get_num_threads()
    if plan.threads:  # on a shared machine fewer threads than cores avoids OpenMP oversubscription
        torch.set_num_threads(plan.threads)
    try:
        return _run_bench(plan, out, checkpoint, channels, progress)
    finally:
        torch.set_num_threads(threads)


def _run_bench(plan: BenchPlan, out: Path, checkpoint: str | None, channels, progress) -> dict:
    from rso.core.model import resolve_device

    started = time.perf_counter()
    model = Model(checkpoint, channels, plan)
    context = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": library_versions(),
        "plan": plan.to_dict(),
        "model": model.to_dict(),
        "grid": list(plan.grid or model.net.config.grid),
        "device": str(resolve_device(plan.device)),
    }
    # The speed section uses only the first case: do not simulate the others for it.
    first_only = replace(plan, cases=plan.cases[:1], case_dirs=plan.case_dirs[:1])
    cases = resolve_cases(plan if plan.experiment else first_only)
    arm_records = []
    if plan.experiment:
        with PeerProcess() as process:
            for position, case in enumerate(cases):  # the position picks the case's wrong geometry
                arm_records += run_case(case, model, plan, out, context, progress, process, position)
    speed_records = speed_section(cases[0], model, plan, out, context) if plan.speed else []
    summary = summarise(arm_records, speed_records, context | {"wall_seconds": time.perf_counter() - started})
    write_json(out / "summary.json", summary)
    write_bytes_atomically(summary_markdown(summary).encode(), out / "summary.md")
    if plan.figures and arm_records:
        for kind in {r["box"]["kind"] for r in arm_records}:
            summary_plot(
                [r for r in arm_records if r["box"]["kind"] == kind],
                out / "figures" / f"box_tre_per_arm_{kind}.png",
                f", {kind} boxes",
            )
    log.info("benchmark done in %.0f s: %s", summary["wall_seconds"], out / "summary.md")
    return summary


def _clear_previous(out: Path) -> None:
    """Remove a previous run's outputs (only the files this command writes) so no stale record mixes in."""
    patterns = (
        "arm_*.json",
        "speed_*.json",
        "summary.json",
        "summary.md",
        "figures/case_*.png",
        "figures/box_tre_per_arm*.png",
    )
    for pattern in patterns:
        for path in out.glob(pattern):
            path.unlink()
