"""The benchmark's statistics: medians per box kind and arm, RSO against ISO-long and the peers, the
targets."""

from __future__ import annotations

import numpy as np

from rso.evaluation.bench.plan import (
    ARM_ORDER,
    GENERAL_RSO_ARM,
    NO_GEOMETRY_ISO_ARM,
    NO_GEOMETRY_RSO_ARM,
    PAPER_ARM,
    RECORD_FORMAT,
    RSO_ARMS,
    WRONG_GEOMETRY_ISO_ARM,
    WRONG_GEOMETRY_RSO_ARM,
    default_arm,
    wrong_geometry_label,
)
from rso.evaluation.box_kinds import BOX_KINDS

PEERS_TO_BEAT = ("elastix_bspline", "elastix_bspline_box_mask", "ants_syn")


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _box_tre(record: dict) -> float | None:
    return (record["metrics"].get("tre_mm_box") or {}).get("mean")


def _metric(record: dict, key: str, sub: str | None = None):
    value = record["metrics"].get(key)
    return (value or {}).get(sub) if sub else value


def _contour(record: dict, names: tuple[str, ...], measure: str) -> float | None:
    """The mean of a contour measure over the named labels the arm carried (None when it has none)."""
    values = [record.get("contours", {}).get(name, {}).get(measure) for name in names]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def arm_label(mine: list[dict]) -> str:
    """The label of an arm's row: a wrong-geometry arm's names every perturbation its cases got."""
    label = mine[0]["label"]
    perturbations = list(dict.fromkeys((r.get("settings") or {}).get("wrong_geometry") for r in mine))
    if len(perturbations) > 1 and None not in perturbations:
        return wrong_geometry_label(label.rsplit(" (", 1)[0], ", ".join(perturbations))
    return label


def _key(record: dict) -> tuple:
    return record["case"]["name"], record["box"]["kind"], record["box"]["index"]


def per_arm_table(records: list[dict]) -> list[dict]:
    """Medians over every (case, box) each arm ran on."""
    rows = []
    for arm in ARM_ORDER:
        mine = [r for r in records if r["arm"] == arm]
        if not mine:
            continue
        get = lambda key, sub=None, mine=mine: [_metric(r, key, sub) for r in mine]
        outside = [v for v in get("outside_change_mm") if v is not None]
        rows.append(
            {
                "arm": arm,
                "label": arm_label(mine),
                "n": len(mine),
                "box_tre_mean_mm": _median(get("tre_mm_box", "mean")),
                "box_tre_p95_mm": _median(get("tre_mm_box", "p95")),
                "box_rmse_hu": _median(get("rmse_hu_box")),
                "tre_mean_mm": _median(get("tre_mm", "mean")),
                "outside_change_max_mm": max(outside) if outside else None,
                "dice_lungs": _median(_contour(r, ("right lung", "left lung"), "dice") for r in mine),
                "dice_lesion": _median(_contour(r, ("lesion",), "dice") for r in mine),
                "hd95_lesion_mm": _median(_contour(r, ("lesion",), "hd95_mm") for r in mine),
                "dice_nodule": _median(_contour(r, ("nodule",), "dice") for r in mine),
                "declined": sum(r.get("declined") is not None for r in mine),
                "returned": sum(_returned(r) for r in mine),
                "seconds": _median(r["seconds"] for r in mine),
                "latency_seconds": _median(r.get("latency_seconds") for r in mine),
                "peak_rss_mb": _median(r["peak_memory"].get("peak_rss_mb") for r in mine),
            }
        )
    return rows


def paired(records: list[dict], arm: str, other: str) -> list[tuple[dict, dict]]:
    """(arm, other) records of the same (case, box)."""
    index = {_key(r): r for r in records if r["arm"] == other}
    return [(r, index[_key(r)]) for r in records if r["arm"] == arm and _key(r) in index]


def versus(records: list[dict], arm: str, baseline: str) -> dict | None:
    """How often ``arm`` has the lower box TRE than ``baseline``, the median relative reduction and change."""
    pairs = [(_box_tre(a), _box_tre(b)) for a, b in paired(records, arm, baseline)]
    pairs = [(a, b) for a, b in pairs if a is not None and b]
    if not pairs:
        return None
    return {
        "arm": arm,
        "baseline": baseline,
        "pairs": len(pairs),
        "win_fraction": float(np.mean([a < b for a, b in pairs])),
        "median_box_tre_reduction": float(np.median([1 - a / b for a, b in pairs])),
        "median_change_mm": float(np.median([a - b for a, b in pairs])),
        "worst_change_mm": float(max(a - b for a, b in pairs)),
    }


def folding_introduced(records: list[dict], arm: str) -> int:
    """Boxes where the arm's field folds more of the grid than ISO-short's did."""
    return sum(
        a["metrics"]["folding_fraction"] > b["metrics"]["folding_fraction"] + 1e-12
        for a, b in paired(records, arm, "iso_short")
    )


def by_kind(records: list[dict]) -> dict:
    """Per box kind: the arm table, the default RSO against ISO-long, ISO-short and the peers."""
    summary = {}
    for kind in BOX_KINDS:
        mine = [r for r in records if r["box"]["kind"] == kind]
        if not mine:
            continue
        comparisons = {
            f"{arm} vs {base}": versus(mine, arm, base)
            for arm in RSO_ARMS
            for base in ("general", "iso_long", "iso_short", *PEERS_TO_BEAT)
        }
        summary[kind] = {
            "arms": per_arm_table(mine),
            "boxes": len({_key(r) for r in mine}),
            "versus": {k: v for k, v in comparisons.items() if v},
        }
    return summary


def speed_table(records: list[dict]) -> list[dict]:
    """One row per measurement, with the speed-up over full mode and over fp32 at the same grid and box."""
    rows = []
    for r in records:

        def same(r=r, **match):
            return next(
                (
                    s
                    for s in records
                    if s["grid"] == r["grid"]
                    and s["box_size_mm"] == r["box_size_mm"]
                    and all(s[k] == v for k, v in match.items())
                ),
                None,
            )

        full, fp32 = same(mode="full", precision=r["precision"]), same(mode=r["mode"], precision="fp32")
        rows.append(
            {
                "grid": "x".join(map(str, r["grid"])) if r["mode"] != "native" else "native",
                "precision": r["precision"] if r["mode"] != "native" else "fp32",
                "box_mm": r["box_size_mm"],
                "mode": r["mode"],
                "window": "x".join(map(str, r["window_voxels"])),
                "s_per_iter": r["seconds_per_iteration"],
                "speedup_vs_full": full["seconds_per_iteration"] / r["seconds_per_iteration"]
                if full
                else None,
                "speedup_vs_fp32": fp32["seconds_per_iteration"] / r["seconds_per_iteration"]
                if fp32
                else None,
                "step_s": r["projected_step_seconds"],
                "latency_s": r["projected_latency_seconds"],
                "peak_rss_mb": r["peak_memory"].get("peak_rss_mb"),
            }
        )
    return rows


def targets(records: list[dict], scope: str = "all cases") -> list[dict]:
    """The issue's targets for the default RSO, each with the measured value and whether it is met."""
    arm = default_arm()
    misaligned = [r for r in records if r["box"]["kind"] == "misaligned"]
    control = [r for r in records if r["box"]["kind"] == "control"]
    return [
        *_misaligned_targets(misaligned, arm, scope),
        *_control_targets(control, arm, scope),
        *path_guard_targets(records, scope),
        *iso_against_general(records, scope),
        *_locality_targets(records, arm, scope),
        *_latency_targets(records, arm, scope),
    ]


def _misaligned_targets(misaligned: list[dict], arm: str, scope: str) -> list[dict]:
    """RSO against ISO-long (the issue's targets) and against the peers (an aim) in the misaligned boxes."""
    if (v := versus(misaligned, arm, "iso_long")) is None:
        return []
    rows = [
        _target(
            f"{scope}, misaligned: RSO beats ISO-long in box TRE on >= 80 % of (case, box)",
            v["win_fraction"],
            0.8,
            ">=",
        ),
        _target(
            f"{scope}, misaligned: median box TRE reduction vs ISO-long >= 30 %",
            v["median_box_tre_reduction"],
            0.3,
            ">=",
        ),
    ]
    for peer in PEERS_TO_BEAT:
        if (p := versus(misaligned, arm, peer)) is not None:
            rows.append(
                _target(
                    f"{scope}, misaligned (aim): RSO below {peer} in box TRE (fraction of boxes)",
                    p["win_fraction"],
                    0.5,
                    ">=",
                )
            )
    return rows


def _control_targets(control: list[dict], arm: str, scope: str) -> list[dict]:
    """The control boxes' change from ISO-short: median and worst."""
    if (v := versus(control, arm, "iso_short")) is None:
        return []
    return [
        _target(
            f"{scope}, control: median box TRE change from ISO-short <= +0.1 mm",
            v["median_change_mm"],
            0.1,
            "<=",
        ),
        _target(f"{scope}, control: no box worse by more than 0.5 mm", v["worst_change_mm"], 0.5, "<="),
    ]


def _locality_targets(records: list[dict], arm: str, scope: str) -> list[dict]:
    """The field outside box + margin unchanged, and no folding introduced by RSO."""
    local = [
        r["metrics"]["outside_change_mm"]
        for r in records
        if r["arm"] == arm and r["metrics"]["outside_change_mm"] is not None
    ]
    if not local:
        return []
    return [
        _target(f"{scope}: field outside box + margin unchanged (mm)", max(local), 0.0005, "<"),
        _target(f"{scope}: boxes where RSO introduced folding", folding_introduced(records, arm), 0, "<="),
    ]


def _latency_targets(records: list[dict], arm: str, scope: str) -> list[dict]:
    """The worst box-to-overlay latency of the default RSO (fp32)."""
    latency = [
        r["latency_seconds"] for r in records if r["arm"] == arm and r.get("latency_seconds") is not None
    ]
    if not latency:
        return []
    return [
        _target(
            f"{scope}: box to re-warped native overlay, worst (s; native RSO is fp32)",
            max(latency),
            10,
            "<=",
        )
    ]


def path_guard_targets(records: list[dict], scope: str) -> list[dict]:
    """On every path (with projection geometry, without it, with the moving image's slightly wrong, from
    the general model): no control or residual box worse than the path's start by more than 0.5 mm."""
    rows = []
    paths = (
        (default_arm(), "iso_short", "default path (matched where the case has FDK geometry)"),
        (NO_GEOMETRY_RSO_ARM, NO_GEOMETRY_ISO_ARM, "no geometry"),
        (WRONG_GEOMETRY_RSO_ARM, WRONG_GEOMETRY_ISO_ARM, "wrong geometry"),
        (GENERAL_RSO_ARM, "general", "from the general model, no ISO"),
    )
    for arm, base, name in paths:
        kept = [r for r in records if r["box"]["kind"] in ("control", "residual")]
        if (v := versus(kept, arm, base)) is not None:
            start = "the general model" if base == "general" else "ISO-short"
            what = f"{scope}, {name}: no control or residual box worse than {start} by more than 0.5 mm"
            rows.append(_target(what, v["worst_change_mm"], 0.5, "<="))
    return rows


def iso_against_general(records: list[dict], scope: str) -> list[dict]:
    """An aim, not the issue's: on each path, no box of any kind worse under ISO-short's field than under
    the general model's by more than 0.5 mm. A kept ISO can lower the lung's mean and still move a region
    far away (docs/decisions.md, "ISO's margin and native RSO's returns, chosen together")."""
    rows = []
    paths = (
        ("iso_short", "default path"),
        (NO_GEOMETRY_ISO_ARM, "no geometry"),
        (WRONG_GEOMETRY_ISO_ARM, "wrong geometry"),
    )
    for arm, name in paths:
        if (v := versus(records, arm, "general")) is not None:
            what = f"{scope}, {name} (aim): no box worse under ISO-short than the general model by > 0.5 mm"
            rows.append(_target(what, v["worst_change_mm"], 0.5, "<="))
    return rows


def _target(what: str, value, threshold, relation: str) -> dict:
    if value is None:
        return {"target": what, "measured": None, "threshold": f"{relation} {threshold}", "met": None}
    met = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[relation]
    return {"target": what, "measured": value, "threshold": f"{relation} {threshold}", "met": bool(met)}


def summarise(arm_records: list[dict], speed_records: list[dict], context: dict) -> dict:
    held_out = [r for r in arm_records if r["case"].get("held_out")]
    summary = {
        "format": RECORD_FORMAT,
        "kind": "summary",
        "cases": sorted({r["case"]["name"] for r in arm_records}),
        "default_arm": default_arm(),
        "paper_arm": PAPER_ARM,
        "by_kind": by_kind(arm_records),
        "held_out": by_kind(held_out),
        "speed": speed_table(speed_records),
        **context,
    }
    summary["targets"] = targets(arm_records) + (targets(held_out, "held-out lung2") if held_out else [])
    return summary


def _returned(record: dict) -> bool:
    """Whether a kept step returned its box to an earlier state (a declined return changed nothing)."""
    return record.get("declined") is None and (record.get("guard") or {}).get("returned_to") is not None
