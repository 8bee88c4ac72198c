"""What the guard could use on cone-beam streaks: each box's refinement scored without the guard (#20).

For every cone-beam case of the training anatomies (``--case``, folders made by ``rso-registration
simulate --preset xvi|truebeam``), two chains from the same general model: ISO-100 on the
artefact-matched pair (both projection geometries) and ISO-100 without geometry. On two misaligned,
one residual and two control boxes (40 mm, picked on the matched ISO-100 field), native RSO runs with
the fitted-gain threshold off and no return (``min_gain=0``, ``returns=False``; the rule on the images as
given, ``min_unfitted_gain``, chosen from this study's first run, stays on unless ``--given-rule-off``);
its correction is scored by the
gains of ``scripts/guard_study.py``'s views (the step's own MIND on the fitted pair, MIND after 4 mm
pre-smoothing, MIND on the pair the current field was not fitted to). The return to an earlier state
is scored on its own (the default setting), so that any rule ``return, else refine if ...`` can be
replayed offline (``--summary``). One JSON line per (case, chain, box).

    python scripts/conebeam_guard_study.py --case DIR ... --out bench/sweep/conebeam-guard/runs.jsonl
    python scripts/conebeam_guard_study.py --summary bench/sweep/conebeam-guard/runs.jsonl

(``truth-model.jsonl``: the matched chain only, ``--matched-only``, with the model bundled since 2026-12-05;
``truth-model-given-rule-off.jsonl``: the same with ``--given-rule-off``. ``--summary`` also replays the
axis share, the guard's rule since 2026-12-05: ``shape``'s superior-inferior share, the default placement's
rotation axis. ``no-geometry-truth-model.jsonl``: the no-geometry chain only, ``--no-geometry-only``, with
the default step's guard recorded (its second opinion too); ``--summary`` replays the candidates of
``no-geometry-rule.md`` on top of it. ``matching-share.jsonl``: ``--matched-only --given-rule-off`` on
the ten cases and eight more of the training anatomies, with the guard of commit 65d9ce2, which recorded
the matching share (taken out after it); ``--summary`` replays the candidates of
``matching-share-rule.md``.)

Rules are chosen on the training anatomies only. The held-out patient (lung2) and fresh seeds come here
only to score a rule already frozen: ``bench/results-conebeam-6/guard-replay.jsonl`` (seeds 37 and 38,
``--given-rule-off``) and ``guard-replay-seeds35-36.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402
from guard_study import correction_shape, view_gains  # noqa: E402

from rso.core.native import window_grid  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings, ISOSettings, RSOSettings  # noqa: E402

BOXES = (("misaligned", 2), ("residual", 1), ("control", 2))
NO_GEOMETRY = {"fixed_geometry": None, "moving_geometry": None}
log = logging.getLogger("conebeam_guard_study")


def iso_chain(engine, inputs, network, matched: bool):
    session = start_session(engine, inputs if matched else {**inputs, **NO_GEOMETRY}, network=network)
    session.general()
    session.iso(ISOSettings(iterations=100))
    return session


def score_box(session, kind: str, box, given_rule: bool = True) -> dict:
    """The box's TRE after ISO, after the unguarded refinement (with its view gains; ``given_rule``: the
    rule on the images as given stays on) and after the default step (its guard recorded: the candidates are
    replayed on it)."""
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    row = {"kind": kind, "ras": box.ras_corners, "tre_before": before}
    unguarded = RSOSettings(
        min_gain=0.0, max_disagreement_mm=0.0, min_axis_share=0.0, min_motion_left=0.0, returns=False
    )
    if not given_rule:
        unguarded = replace(unguarded, min_unfitted_gain=-np.inf)
    record = session.rso(box, unguarded)
    row["tre_refined"] = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
    row["guard"] = record.guard
    if record.accepted:
        patch = session.state.patches[-1]
        _, box_voxels, _ = window_grid(session.grid, box, RSOSettings().blend_margin_mm)
        row["gains"] = view_gains(session, box, patch)
        row["shape"] = correction_shape(patch, box_voxels)
        session.undo()
    default = session.rso(box, RSOSettings())
    returned = (default.guard or {}).get("returned_to")
    row["returned_to"] = returned
    row["return_gain"] = (default.guard or {}).get("gain") if returned is not None else None
    row["tre_default"] = default.metrics["tre_mm_box"]["mean"] if default.accepted else before
    row["default_guard"] = default.guard
    if default.accepted:
        session.undo()
    return row


def study(
    cases: list[str], out: Path, chains: tuple[str, ...] = ("matched", "no_geometry"), given_rule: bool = True
) -> None:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        for spec in cases:
            folder, phase = case_spec(spec)
            inputs = case_inputs(folder, phase)
            matched = iso_chain(engine, inputs, network, matched=True)
            boxes = [(k, b) for k, n in BOXES for b in pick_boxes(matched, k, n, 40.0)]
            sessions = {"matched": matched}
            if "no_geometry" in chains:
                sessions["no_geometry"] = iso_chain(engine, inputs, network, matched=False)
            for chain, session in sessions.items():
                if chain not in chains:
                    continue  # the matched chain's ISO field still picks the boxes
                for index, (kind, box) in enumerate(boxes):
                    row = {
                        "case": folder.name,
                        "chain": chain,
                        "box": index,
                        **score_box(session, kind, box, given_rule),
                    }
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    log.info(
                        "%s %s %s %.2f -> %.2f (default %.2f) %s",
                        folder.name,
                        chain,
                        kind,
                        row["tre_before"],
                        row["tre_refined"],
                        row["tre_default"],
                        row.get("gains"),
                    )


def replay(rows: list[dict], rule) -> dict:
    """Each box's TRE under ``return, else refine if rule(row)``: changes against ISO-100 per kind."""
    changes = {}
    for row in rows:
        if row["returned_to"] is not None:
            after = row["tre_default"]
        elif "gains" in row and rule(row):
            after = row["tre_refined"]
        else:
            after = row["tre_before"]
        changes.setdefault(row["kind"], []).append(after - row["tre_before"])
    return _scores(changes)


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    no_geometry_summary(rows)
    matching_share_summary(rows)
    for chain in ("matched", "no_geometry"):
        mine = [r for r in rows if r["chain"] == chain]
        if not mine:
            continue
        print(f"\n{chain}: {len(mine)} boxes")
        for r in mine:
            g = r.get("gains", {})
            print(
                f"  {r['case'][:22]:22s} {r['kind'][:4]} {r['tre_before']:6.2f} -> {r['tre_refined']:6.2f}"
                f" (default {r['tre_default']:6.2f}{' R' if r['returned_to'] is not None else '  '})"
                + "".join(f" {k} {v:+.2f}" for k, v in g.items())
            )
        for fitted in (0.15, 0.2, 0.25, 0.3, 0.4):
            for unfitted in (None, 0.0, 0.05, 0.1, 0.2):
                rule = (
                    (lambda r, a=fitted: r["gains"]["mind2"] >= a)
                    if unfitted is None
                    else (lambda r, a=fitted, b=unfitted: r["gains"]["mind2"] >= a and r["gains"]["raw"] >= b)
                )
                scored = replay(mine, rule)
                print(f"  fitted >= {fitted:.2f}, unfitted >= {unfitted}: {_scored(scored)}")
        for unfitted in (None, 0.1):
            for share in (0.45, 0.5, 0.55, 0.6, 0.65):
                scored = replay(mine, lambda r, b=unfitted, s=share: _axis_rule(r, 0.2, b, s))
                print(f"  fitted >= 0.20, unfitted >= {unfitted}, axis share >= {share}: {_scored(scored)}")


# Candidates for the no-geometry path, each on top of today's guard (bench/sweep/conebeam-guard/
# no-geometry-rule.md, written before the study ran): the row's unguarded correction is the default step's.
NO_GEOMETRY_CANDIDATES = {
    "today": lambda r: True,
    "axis share >= 0.55": lambda r: r["shape"]["si_share"] >= 0.55,
    "fitted gain >= 0.30": lambda r: r["gains"]["mind2"] >= 0.30,
    "local NCC gain >= 0": lambda r: r["gains"]["lncc"] >= 0.0,
    "4 mm gain >= 0.20": lambda r: r["gains"]["mind4"] >= 0.20,
}


def no_geometry_summary(rows: list[dict]) -> None:
    """Today's no-geometry guard (the default step, second opinion included) and each candidate on top of
    it: changes of box TRE against ISO-100 per kind. A return to an earlier state is left as it is."""
    mine = [r for r in rows if r["chain"] == "no_geometry" and "default_guard" in r]
    if not mine:
        return
    print(f"\nno-geometry guard ({len(mine)} boxes; change median/worst, boxes improved > 0.5 mm)")
    for r in (r for r in mine if _refined_by_default(r)):
        guard = r["default_guard"]
        print(
            f"  kept: {r['case'][:28]:28s} {r['kind'][:4]} {r['tre_before']:6.2f} -> "
            f"{r['tre_default']:6.2f}  gain {guard['gain']:.2f}, second opinion "
            f"{guard.get('disagreement_mm') or 0:.2f} mm, axis share {r['shape']['si_share']:.2f}, "
            f"4 mm gain {r['gains']['mind4']:+.2f}, local NCC gain {r['gains']['lncc']:+.2f}"
        )
    for name, extra in NO_GEOMETRY_CANDIDATES.items():
        changes = {}
        for r in mine:
            kept = r["returned_to"] is not None or (_refined_by_default(r) and extra(r))
            after = r["tre_default"] if kept else r["tre_before"]
            changes.setdefault(r["kind"], []).append(after - r["tre_before"])
        print(f"  {name:22s} {_scored(_scores(changes))}")


# Candidates for the default path, each on top of today's guard (bench/sweep/conebeam-guard/
# matching-share-rule.md, written before the study ran): decline where the matching share is >= t.
MATCHING_SHARE_CANDIDATES = (0.3, 0.5, 0.7, 1.0)
TODAY = RSOSettings()  # the default step's guard thresholds


def matching_share_summary(rows: list[dict]) -> None:
    """Today's guard on the matched chain (replayed on the unguarded step: fitted gain, gain on the images
    as given, axis share) and with each matching-share threshold on top: changes of box TRE against
    ISO-100 per kind, and the steps today's guard keeps with their matching shares."""
    mine = [r for r in rows if r["chain"] == "matched" and (r.get("guard") or {}).get("matching_share")]
    if not mine:
        return
    print(f"\nmatching share ({len(mine)} boxes; change median/worst, boxes improved > 0.5 mm)")
    for r in (r for r in mine if "gains" in r and _today(r)):
        print(
            f"  kept: {r['case'][:30]:30s} {r['kind'][:4]} {r['tre_before']:6.2f} -> {r['tre_refined']:6.2f}"
            f"  matching share {r['guard']['matching_share']:.2f}, gain {r['gains']['mind2']:.2f}, as given "
            f"{r['gains']['raw']:+.2f}"
        )
    print(f"  {'today':12s} {_scored(replay(mine, _today))}")
    for t in MATCHING_SHARE_CANDIDATES:
        scored = replay(mine, lambda r, t=t: _today(r) and r["guard"]["matching_share"] < t)
        print(f"  {'share < ' + str(t):12s} {_scored(scored)}")


def _today(row: dict) -> bool:
    """Today's guard on the matched chain (the default settings' thresholds), replayed on a step scored with
    the rules off."""
    return _axis_rule(row, TODAY.min_gain, TODAY.min_unfitted_gain, TODAY.min_axis_share)


def _refined_by_default(row: dict) -> bool:
    """Whether the default step kept an optimised correction (not a return, not a decline)."""
    return row["returned_to"] is None and row["tre_default"] != row["tre_before"] and "gains" in row


def _scores(changes: dict[str, list[float]]) -> dict:
    return {
        kind: {
            "median": float(np.median(c)),
            "worst": float(np.max(c)),
            "improved": int(sum(x < -0.5 for x in c)),
            "n": len(c),
        }
        for kind, c in sorted(changes.items())
    }


def _axis_rule(row: dict, fitted: float, unfitted: float | None, share: float) -> bool:
    """The guard with the axis share (the correction's superior-inferior share in the box: the default
    placement's rotation axis) on top of the gain rules."""
    gains = row["gains"]
    kept = gains["mind2"] >= fitted and (unfitted is None or gains["raw"] >= unfitted)
    return kept and row["shape"]["si_share"] >= share


def _scored(scored: dict) -> str:
    return "; ".join(
        f"{k[:4]} {s['median']:+.2f}/{s['worst']:+.2f} ({s['improved']}/{s['n']})" for k, s in scored.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], metavar="DIR[:K]")
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/conebeam-guard/runs.jsonl"))
    parser.add_argument("--summary", type=Path, help="replay the guard rules on a runs file and stop")
    parser.add_argument("--matched-only", action="store_true", help="leave out the no-geometry chain")
    parser.add_argument(
        "--no-geometry-only", action="store_true", help="score the no-geometry chain only (boxes as before)"
    )
    parser.add_argument(
        "--given-rule-off",
        action="store_true",
        help="score steps the rule on the images as given declines too",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.summary:
        summary(args.summary)
    else:
        chains = ("matched",) if args.matched_only else ("matched", "no_geometry")
        chains = ("no_geometry",) if args.no_geometry_only else chains
        study(args.case, args.out, chains, given_rule=not args.given_rule_off)


if __name__ == "__main__":
    main()
