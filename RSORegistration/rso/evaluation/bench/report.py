"""The benchmark's summary as markdown and its box-TRE plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rso.evaluation.bench.plan import ARM_ORDER
from rso.evaluation.bench.summary import _box_tre, _median, arm_label


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


ARM_COLUMNS = (
    "label",
    "n",
    "box_tre_mean_mm",
    "box_tre_p95_mm",
    "box_rmse_hu",
    "tre_mean_mm",
    "outside_change_max_mm",
    "declined",
    "returned",
    "dice_lungs",
    "dice_lesion",
    "hd95_lesion_mm",
    "seconds",
    "latency_seconds",
)
VERSUS_COLUMNS = (
    "comparison",
    "pairs",
    "win_fraction",
    "median_box_tre_reduction",
    "median_change_mm",
    "worst_change_mm",
)


def kind_sections(by_kind: dict, level: str = "##") -> str:
    """A table of arms and one of comparisons per box kind."""
    text = []
    for kind, part in by_kind.items():
        versus = [{"comparison": name, **value} for name, value in part["versus"].items()]
        text.append(
            f"{level} {kind} boxes ({part['boxes']})\n\n{markdown_table(part['arms'], list(ARM_COLUMNS))}\n"
            f"{markdown_table(versus, list(VERSUS_COLUMNS))}"
        )
    return "\n".join(text)


def summary_markdown(summary: dict) -> str:
    machine, plan = summary["machine"], summary["plan"]
    cores = machine.get("usable_cores", machine["logical_cores"])
    channels = summary["model"]["config"]["channels"]
    cases = ", ".join(summary["cases"]) or "–"
    boxes = ", ".join(f"{count} {kind}" for kind, count in plan["boxes"])
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    wrong_off = "" if plan.get("wrong_geometry", True) else " (off in this run: `--no-wrong-geometry`)"
    return f"""# Benchmark summary

Run {summary["started"]}, {summary["wall_seconds"]:.0f} s, on {machine["cpu"]} ({cores} cores,
{machine["torch_threads"]} torch threads, {machine["memory_gb"]} GB{gpu}); device {summary["device"]},
precision {plan["precision"]} for the network (native RSO is fp32).
Model: {summary["model"]["source"]} (channels {channels}), grid {summary["grid"]}.
Cases: {cases}. Boxes of {plan["box_size_mm"]} mm per case: {boxes} (rso.evaluation.box_kinds); the paper's
RSO arm and box-masked elastix run on {", ".join(plan["costly_kinds"])} boxes only. TRE against the
simulator's truth, RMSE against the clean fixed CT, both inside `{plan["evaluation_mask"]}` on the model
grid; medians over (case, box). The default RSO arm is `{summary["default_arm"]}`; the paper's is
`{summary["paper_arm"]}`.

`seconds` runs from the input images to the arm's field (general + ISO + RSO for the deep arms);
`latency_seconds` is an RSO step plus the native-resolution re-warp and difference image (a declined step:
the step alone). `declined`: RSO steps the guard declined (the field stays ISO-{plan["iso_short"]}'s, or the
general model's on the path without ISO).
`returned`: RSO steps that returned the box to an earlier state's field (the general model's, ...), which
the images ISO did not fit prefer there.
`outside_change_max_mm`: the largest field change outside box + blend margin, over all boxes.
`no geometry`: ISO-{plan["iso_short"]} and native RSO on a session given no projection geometry (nothing is
artefact-matched; on TV phases ISO is then judged by its axis share and native RSO has no scan rule);
`wrong geometry`{wrong_off}: the same with the moving image's geometry slightly wrong,
one perturbation per case in turn, named in the label (rso.evaluation.wrong_geometry). Both run only where
the case has projection geometry. `general model + RSO`: native RSO on the general model's field, ISO never
run.
`dice_*`, `hd95_lesion_mm`: the simulator's labels of the moving phase carried onto the fixed image by the
arm's field, against phase 0's labels (lungs: the mean of both; the inserted lesion;
rso.evaluation.bench.contours).

# All cases

{kind_sections(summary["by_kind"])}
# Held-out patient (lung2) only

{kind_sections(summary["held_out"]) or "(no held-out case in this run)"}
## Speed and memory (side by side, one process)

{markdown_table(summary["speed"])}
`s_per_iter` is the median after the first (warm-up) iteration of {plan["speed_iterations"]}; `step_s`
projects a full-length step (native: its default iterations; network modes: {plan["rso"]}) from it plus
the measured overhead; `latency_s` adds the metrics and the full-resolution re-warp. `speedup_vs_fp32`
compares the same mode, grid and box in fp32 and bf16, measured one after the other in this process.

## Targets

{markdown_table(summary["targets"])}
## Versions

{markdown_table([summary["versions"]])}"""


def summary_plot(records: list[dict], path: Path, title: str = "") -> Path | None:
    """Box TRE per arm across boxes: one dot per (case, box), a line joining each box's arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [arm for arm in ARM_ORDER if any(r["arm"] == arm for r in records)]
    if not arms:
        return None
    keys = sorted({(r["case"]["name"], r["box"]["kind"], r["box"]["index"]) for r in records})
    values = {
        (r["case"]["name"], r["box"]["kind"], r["box"]["index"], r["arm"]): _box_tre(r) for r in records
    }
    figure, ax = plt.subplots(figsize=(1.3 * len(arms) + 3, 5))
    for key in keys:
        ys = [values.get((*key, arm)) for arm in arms]
        ax.plot(
            range(len(arms)),
            [np.nan if y is None else y for y in ys],
            "-o",
            color="0.6",
            alpha=0.6,
            markersize=4,
        )
    medians = [_median(values.get((*key, arm)) for key in keys) for arm in arms]
    ax.plot(
        range(len(arms)),
        [np.nan if m is None else m for m in medians],
        "s",
        color="crimson",
        markersize=9,
        label="median",
    )
    ax.set_xticks(range(len(arms)))
    names = [arm_label([r for r in records if r["arm"] == arm]) for arm in arms]
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")  # a diverged peer (100 mm) would flatten every other arm on a linear axis
    ax.set_ylabel("box TRE, mean (mm; log scale)")
    ax.set_title(f"Box TRE per arm: {len(keys)} (case, box) pairs{title}")
    ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
