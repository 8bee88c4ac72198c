"""The benchmark's summary as markdown and its box-TRE plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rso.evaluation.bench.plan import ARM_ORDER
from rso.evaluation.bench.summary import _box_tre, _median


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def summary_markdown(summary: dict) -> str:
    machine, plan = summary["machine"], summary["plan"]
    cores = machine.get("usable_cores", machine["logical_cores"])
    channels = summary["model"]["config"]["channels"]
    cases = ", ".join(summary["cases"]) or "–"
    arms = [{k: v for k, v in row.items() if k != "arm"} for row in summary["arms"]]
    versus_rows = [{"arm": arm, **{k: v for k, v in value.items() if k != "arm"}}
                   for arm, value in summary["versus_iso_long"].items()]
    mode_rows = list(summary["modes"].values())
    latency = [{"arm": arm, "median_latency_s": value} for arm, value in summary["latency_by_arm"].items()]
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    return f"""# Benchmark summary

Run {summary['started']}, {summary['wall_seconds']:.0f} s, on {machine['cpu']} ({cores} cores,
{machine['torch_threads']} torch threads, {machine['memory_gb']} GB{gpu}); device {summary['device']}.
Model: {summary['model']['source']} (channels {channels}), grid {summary['grid']}.
Cases: {cases}; {plan['boxes']} box(es) of {plan['box_size_mm']} mm per case, placed where the
residual after ISO-{plan['iso_short']} is worst. TRE against the simulator's truth, RMSE against the clean fixed CT,
both inside `{plan['evaluation_mask']}` on the model grid; medians over (case, box).

## Per arm (medians over every (case, box))

{markdown_table(arms)}
Seconds are from the input images to the arm's field (general + ISO + RSO for the deep arms);
`step_seconds` is the arm's last step alone; `latency_seconds` is an RSO step plus the full-resolution
re-warp and difference image. `outside_change_max_mm` is the largest field change outside box + blend margin
(relative to the ISO-{plan['iso_short']} field), over all boxes.

## RSO against ISO-{plan['iso_long']} (box TRE, per (case, box))

{markdown_table(versus_rows)}
## Fast modes against full/global (per (case, box), medians)

{markdown_table(mode_rows)}
## Interactive latency in the experiment (box handed over -> warped and difference images ready)

{markdown_table(latency)}
## Speed and memory (side by side, one process)

{markdown_table(summary['speed'])}
`s_per_iter` is the median after the first (warm-up) iteration of {plan['speed_iterations']};
`step_{plan['rso']}_s` projects a {plan['rso']}-iteration step from it plus the measured fixed overhead; `latency_s`
adds the metrics and the full-resolution re-warp. `window` is the sub-volume fed to the network (the whole grid
in full mode).

## Targets (issue 4)

{markdown_table(summary['targets'])}
## Versions

{markdown_table([summary['versions']])}"""


def summary_plot(records: list[dict], path: Path) -> Path | None:
    """Box TRE per arm across all boxes: one dot per (case, box), a line joining each box's arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [arm for arm in ARM_ORDER if any(r["arm"] == arm for r in records)]
    if not arms:
        return None
    keys = sorted({(r["case"]["name"], r["box"]["index"]) for r in records})
    values = {(r["case"]["name"], r["box"]["index"], r["arm"]): _box_tre(r) for r in records}
    figure, ax = plt.subplots(figsize=(1.3 * len(arms) + 3, 5))
    for key in keys:
        ys = [values.get((*key, arm)) for arm in arms]
        ax.plot(range(len(arms)), [np.nan if y is None else y for y in ys], "-o", color="0.6", alpha=0.6, markersize=4)
    medians = [_median(values.get((*key, arm)) for key in keys) for arm in arms]
    ax.plot(range(len(arms)), [np.nan if m is None else m for m in medians], "s", color="crimson", markersize=9,
            label="median")
    ax.set_xticks(range(len(arms)))
    names = [next(r["label"] for r in records if r["arm"] == arm) for arm in arms]
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("box TRE, mean (mm)")
    ax.set_title(f"Box TRE per arm: {len(keys)} (case, box) pairs")
    ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
