"""The box steps the guard's fold rule declines, and what they would do with it relaxed (#20).

The guard declines a native step that would add folded voxels (det J <= 0) in box + margin. Where the
general model's field is already folded there (lung1's lungs at their inferior end), that declines steps
that would fix the box by millimetres (bench/sweep/fold-backtrack/relative-rule.md). For each case
(``--case DIR[:K]``, made by ``rso-registration simulate``; ``--simulate ANATOMY:PRESET:K:SEEDS`` makes
them in the case cache), ISO-100 on the artefact-matched pair, then the default native step on
``BOXES`` (40 mm, picked on the ISO-100 field); where the fold rule declines it, the same step again with
``max_added_fold_share`` so large that only the other rules judge it. One JSON line per box: the box TRE
before, after the default step and after the relaxed one, and the folded voxels before and after.
``--summary`` replays the candidates of ``relative-rule.md`` and of ``bench/sweep/edge/rule.md`` (the
share of the box the field sends outside the moving image, recorded by the guard; the box's distance from
the image's end, from its place).

    python scripts/fold_rule_study.py --simulate lung1:xvi:5:101-116 --out bench/sweep/edge/study.jsonl
    python scripts/fold_rule_study.py --summary bench/sweep/edge/study.jsonl \\
        --summary bench/sweep/fold-backtrack/fold-rule-off.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec, iso_session  # noqa: E402

from rso.core.workflow import build_network  # noqa: E402
from rso.evaluation.bench.cases import case_folder  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings, RSOSettings  # noqa: E402

BOXES = (("misaligned", 3), ("residual", 2), ("control", 3))
# The default step as the study ran it, before the image's-end rule (which a box's place replays exactly).
STUDIED = RSOSettings(min_end_distance_mm=0.0)
RELAXED = replace(STUDIED, max_added_fold_share=1e6)  # only a field with no folds stays protected
CANDIDATES = (0.0, 0.02, 0.05, 0.10, 0.25)
OUTSIDE_CANDIDATES = (1.0, 0.30, 0.20, 0.10, 0.05)
END_CANDIDATES = (10.0, 15.0, 20.0)
TRAINING_SEEDS = 91  # seeds from here on are training cases (rso.evaluation.case_sets)


def step_row(session, box, settings: RSOSettings) -> dict:
    """The step's outcome on ``box`` (undone when kept): kept, box TRE after, the guard's record."""
    step = session.rso(box, settings)
    row = {"kept": step.accepted, "declined": step.declined, "guard": step.guard}
    if step.accepted:
        row["tre_after"] = round(step.metrics["tre_mm_box"]["mean"], 3)
        session.undo()
    return row


def study_case(session, name: str) -> list[dict]:
    rows = []
    boxes = [(kind, box) for kind, n in BOXES for box in pick_boxes(session, kind, n, 40.0)]
    for index, (kind, box) in enumerate(boxes):
        before = session.metrics(box=box)["tre_mm_box"]["mean"]
        row = {
            "case": name,
            "kind": kind,
            "box": index,
            "ras": box.ras_corners,
            "tre_before": round(before, 3),
        }
        row["default"] = step_row(session, box, STUDIED)
        if "fold the field" in (row["default"]["declined"] or ""):
            row["relaxed"] = step_row(session, box, RELAXED)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("case", "kind", "tre_before")} | _outcomes(row)), flush=True)
    return rows


def _outcomes(row: dict) -> dict:
    return {
        arm: (row[arm].get("tre_after"), row[arm]["guard"] and _folds(row[arm]["guard"]))
        for arm in ("default", "relaxed")
        if arm in row
    }


def _folds(guard: dict) -> tuple[int, int] | None:
    if "folded_before" not in guard:
        return None
    return guard["folded_before"], guard["folded_after"]


def cases_of(args) -> list[tuple[Path, int]]:
    cases = [case_spec(spec) for spec in args.case]
    for spec in args.simulate:
        anatomy, preset, phase, seeds = spec.split(":")
        first, _, last = seeds.partition("-")
        for seed in range(int(first), int(last or first) + 1):
            cases.append((case_folder(anatomy, seed, preset, int(phase)), int(phase)))
    return cases


def summary(paths: list[Path]) -> None:
    """Each candidate share on the fold-declined steps of training cases (seeds from ``TRAINING_SEEDS``),
    then on the others: the steps it lets through and their box TRE changes by kind."""
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    declined = [r for r in map(_normalised, rows) if r is not None]
    print(f"{len(rows)} boxes, {len(declined)} steps declined by the fold rule")
    for training in (True, False):
        mine = [r for r in declined if (_seed(r["case"]) >= TRAINING_SEEDS) == training]
        print("training cases:" if training else "other cases (not used to choose):")
        for r in mine:
            print(
                f"  {r['case']:32s} {r['kind']:10s} {r['tre_before']:.2f} -> {r['after']} folds {r['folds']}"
            )
        for share in CANDIDATES:
            through = [r for r in mine if r["after"] is not None and _allowed(r["folds"], share)]
            changes = {}
            for r in through:
                changes.setdefault(r["kind"], []).append(round(r["after"] - r["tre_before"], 2))
            helped = sum(r["after"] < r["tre_before"] - 0.5 for r in through)
            print(f"  share {share:.2f}: {len(through)} through, {helped} helped by > 0.5 mm; {changes}")


def outside_summary(paths: list[Path]) -> None:
    """Each candidate ``max_outside_share`` (bench/sweep/edge/rule.md) replayed on the default steps of this
    script's rows: a kept step whose box the field sends outside the moving image by more than the share is
    declined. Per candidate, the kept steps that harm (> 0.5 mm worse) and the helpful ones it declines."""
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "default" in r and _seed(r["case"]) >= TRAINING_SEEDS]
    print(f"\n{len(rows)} training boxes; default steps with a share of the box sent outside:")
    for r in rows:
        share = (r["default"]["guard"] or {}).get("outside_share")
        if share:
            after = r["default"].get("tre_after")
            print(f"  {r['case']:32s} {r['kind']:10s} {r['tre_before']:.2f} -> {after} outside {share:.2f}")
    for limit in OUTSIDE_CANDIDATES:
        harmful, lost = [], 0
        for r in rows:
            if not r["default"]["kept"]:
                continue
            change = r["default"]["tre_after"] - r["tre_before"]
            if (r["default"]["guard"].get("outside_share") or 0.0) > limit:
                lost += change < -0.5
            elif change > 0.5:
                harmful.append(f"{r['case'][6:24]} {r['kind']} {change:+.2f}")
        print(f"  max_outside_share {limit:.2f}: harmful kept {harmful}; helpful declined {lost}")


def end_summary(paths: list[Path]) -> None:
    """Each candidate ``min_end_distance_mm`` (bench/sweep/edge/rule.md, second candidate) replayed on the
    default steps of this script's rows: a step whose box lies closer than E to the image's superior or
    inferior end is declined. Per candidate, the harmful (> 0.5 mm worse) and helpful steps it declines."""
    from end_rule_replay import end_distance

    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if "default" in r and r["default"]["kept"] and _seed(r["case"]) >= TRAINING_SEEDS]
    for r in kept:
        r["end_mm"] = end_distance(r["ras"], r["case"].split("-")[1])
    print(
        f"\n{len(kept)} kept training steps; harmful (> 0.5 mm worse) and helpful ones by their box's place:"
    )
    for r in kept:
        change = r["default"]["tre_after"] - r["tre_before"]
        if abs(change) > 0.5 and r["end_mm"] < 30:
            print(f"  {r['case']:32s} {r['kind']:10s} {change:+.2f} mm, {r['end_mm']:.1f} mm from the end")
    for limit in END_CANDIDATES:
        near = [r["default"]["tre_after"] - r["tre_before"] for r in kept if r["end_mm"] < limit]
        harmful, helpful = sum(c > 0.5 for c in near), sum(c < -0.5 for c in near)
        print(f"  min_end_distance_mm {limit:.0f}: declines {harmful} harmful and {helpful} helpful steps")


def _normalised(row: dict) -> dict | None:
    """A fold-declined step with its TRE after the relaxed step (None where another rule declined it) and
    its folded voxels (before, after); None for a step the fold rule did not decline."""
    if "default" in row:  # this script's rows
        if "relaxed" not in row:
            return None
        return {**row, "after": row["relaxed"].get("tre_after"), "folds": _folds(row["default"]["guard"])}
    # matched_second_opinion_study.py's rows with the fold rule off (fold-rule-off.jsonl), each of a step
    # the fold rule declined; a step another rule declines has no guard values for its folds.
    return {**row, "after": row.get("tre_after"), "folds": _folds(row.get("guard") or {})}


def _seed(case: str) -> int:
    return int(re.search(r"seed(\d+)", case).group(1))


def _allowed(folds: tuple[int, int] | None, share: float) -> bool:
    return folds is not None and folds[1] - folds[0] <= share * folds[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], metavar="DIR[:K]")
    parser.add_argument("--simulate", action="append", default=[], metavar="ANATOMY:PRESET:K:SEEDS")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, action="append", help="replay the candidates on records")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        outside_summary(args.summary)
        end_summary(args.summary)
        return
    torch.set_num_threads(2)
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for folder, phase in cases_of(args):
        session, _ = iso_session(engine, case_inputs(folder, phase), network, 100)
        with args.out.open("a") as out:
            for row in study_case(session, folder.name):
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
