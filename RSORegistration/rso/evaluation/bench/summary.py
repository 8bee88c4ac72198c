"""The benchmark's statistics: medians per arm, RSO against ISO-long, the fast modes, and the targets."""

from __future__ import annotations

import numpy as np

from rso.core.session import RSOSettings
from rso.evaluation.bench.plan import ARM_ORDER, PAPER_ARM, RECORD_FORMAT, RSO_ARMS


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _box_tre(record: dict) -> float | None:
    return (record["metrics"].get("tre_mm_box") or {}).get("mean")


def per_arm_table(records: list[dict]) -> list[dict]:
    rows = []
    for arm in ARM_ORDER:
        mine = [r for r in records if r["arm"] == arm]
        if not mine:
            continue
        get = lambda key, sub=None: [_metric(r, key, sub) for r in mine]  # noqa: E731
        outside = [v for v in get("outside_change_mm") if v is not None]
        rows.append({
            "arm": arm, "label": mine[0]["label"], "n": len(mine),
            "box_tre_mean_mm": _median(get("tre_mm_box", "mean")), "box_tre_p95_mm": _median(get("tre_mm_box", "p95")),
            "box_rmse_hu": _median(get("rmse_hu_box")), "tre_mean_mm": _median(get("tre_mm", "mean")),
            "outside_change_max_mm": max(outside) if outside else None,
            "folding_fraction": _median(get("folding_fraction")),
            "seconds": _median(r["seconds"] for r in mine),
            "step_seconds": _median(r.get("step_seconds") for r in mine),
            "latency_seconds": _median(r.get("latency_seconds") for r in mine),
            "peak_rss_mb": _median(r["peak_memory"].get("peak_rss_mb") for r in mine),
        })
    return rows


def _metric(record: dict, key: str, sub: str | None = None):
    value = record["metrics"].get(key)
    return (value or {}).get(sub) if sub else value


def paired(records: list[dict], arm: str, other: str) -> list[tuple[dict, dict]]:
    """(arm, other) records of the same (case, box)."""
    index = {(r["case"]["name"], r["box"]["index"]): r for r in records if r["arm"] == other}
    return [(r, index[key]) for r in records if r["arm"] == arm
            and (key := (r["case"]["name"], r["box"]["index"])) in index]


def versus(records: list[dict], arm: str, baseline: str) -> dict | None:
    """How often ``arm`` has the lower box TRE than ``baseline``, and the median relative reduction."""
    pairs = [(_box_tre(a), _box_tre(b)) for a, b in paired(records, arm, baseline)]
    pairs = [(a, b) for a, b in pairs if a is not None and b]
    if not pairs:
        return None
    return {"arm": arm, "baseline": baseline, "pairs": len(pairs),
            "win_fraction": float(np.mean([a < b for a, b in pairs])),
            "median_box_tre_reduction": float(np.median([1 - a / b for a, b in pairs]))}


def mode_ratio(records: list[dict], arm: str) -> dict | None:
    """RSO step speed-up over full/global and the box-TRE ratio to it, per (case, box), medians."""
    pairs = paired(records, arm, PAPER_ARM)
    if not pairs:
        return None
    return {"arm": arm, "pairs": len(pairs),
            "step_speedup_vs_full": _median(b["step_seconds"] / a["step_seconds"] for a, b in pairs),
            "box_tre_ratio_to_full": _median(_box_tre(a) / _box_tre(b) for a, b in pairs if _box_tre(b))}


def speed_table(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        full = next((s for s in records if s["grid"] == r["grid"] and s["box_size_mm"] == r["box_size_mm"]
                     and s["mode"] == "full"), None)
        rows.append({"grid": "x".join(map(str, r["grid"])), "box_mm": r["box_size_mm"], "mode": r["mode"],
                     "window": "x".join(map(str, r["window_voxels"])), "s_per_iter": r["seconds_per_iteration"],
                     "speedup_vs_full": full["seconds_per_iteration"] / r["seconds_per_iteration"] if full else None,
                     f"step_{r['projected_iterations']}_s": r["projected_step_seconds"],
                     "latency_s": r["projected_latency_seconds"], "export_s": r["export_seconds"],
                     "peak_rss_mb": r["peak_memory"].get("peak_rss_mb")})
    return rows


def targets(records: list[dict], summary: dict) -> list[dict]:
    """Issue 4's targets, each with the measured value and whether it is met."""
    rows = []
    paper = summary["versus_iso_long"].get(PAPER_ARM)
    if paper:
        rows.append(_target("ISO+RSO beats ISO-long in box TRE on >= 80 % of (case, box)",
                            paper["win_fraction"], 0.8, ">="))
        rows.append(_target("median box-TRE reduction vs ISO-long >= 30 %",
                            paper["median_box_tre_reduction"], 0.3, ">="))
    crop = summary["modes"].get("rso_crop_local")
    if crop:
        rows.append(_target("crop >= 10x faster per RSO step than full", crop["step_speedup_vs_full"], 10, ">="))
        rows.append(_target("crop box TRE within 5 % of full", crop["box_tre_ratio_to_full"], 1.05, "<="))
    local = [r["metrics"]["outside_change_mm"] for r in records if r["arm"] in ("rso_crop_local", "rso_direct_local")]
    if local:
        rows.append(_target("local moves the field outside box + margin by 0.000 mm", max(local), 0.0005, "<"))
    default = next((r for r in summary["arms"] if r["arm"] == default_arm()), None)
    if default and default["latency_seconds"] is not None:
        rows.append(_target(f"interactive latency of the default mode ({default_arm()}) <= 10 s",
                            default["latency_seconds"], 10, "<="))
    versus_elastix = default_vs_elastix(records)
    if versus_elastix is not None:
        rows.append(_target("default three-step run faster than elastix at lower box TRE (fraction of boxes)",
                            versus_elastix, 1.0, ">="))
    return rows


def default_arm() -> str:
    """The arm that the engine's default RSOSettings run."""
    return next(arm for arm, (mode, compose) in RSO_ARMS.items()
                if (mode, compose) == (RSOSettings.mode, RSOSettings.compose))


def default_vs_elastix(records: list[dict]) -> float | None:
    pairs = paired(records, default_arm(), "elastix_bspline")
    if not pairs:
        return None
    return float(np.mean([a["seconds"] < b["seconds"] and _box_tre(a) < _box_tre(b) for a, b in pairs]))


def _target(what: str, value, threshold, relation: str) -> dict:
    if value is None:
        return {"target": what, "measured": None, "threshold": f"{relation} {threshold}", "met": None}
    met = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[relation]
    return {"target": what, "measured": value, "threshold": f"{relation} {threshold}", "met": bool(met)}


def summarise(arm_records: list[dict], speed_records: list[dict], context: dict) -> dict:
    modes = {arm: mode_ratio(arm_records, arm) for arm in RSO_ARMS if arm != PAPER_ARM}
    summary = {
        "format": RECORD_FORMAT, "kind": "summary",
        "cases": sorted({r["case"]["name"] for r in arm_records}),
        "arms": per_arm_table(arm_records),
        "versus_iso_long": {arm: versus(arm_records, arm, "iso_long") for arm in RSO_ARMS},
        "modes": {arm: value for arm, value in modes.items() if value},
        "latency_by_arm": {arm: _median(r.get("latency_seconds") for r in arm_records if r["arm"] == arm)
                           for arm in RSO_ARMS},
        "speed": speed_table(speed_records),
        **context,
    }
    summary["versus_iso_long"] = {k: v for k, v in summary["versus_iso_long"].items() if v}
    summary["targets"] = targets(arm_records, summary)
    return summary
