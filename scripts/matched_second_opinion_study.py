"""Would the second opinion (local NCC on the images as given) catch harmful matched steps? (#20)

The guard's second opinion runs today only where a step compares the images as given; a matched step is
checked by the images as given through its own similarity instead (``min_unfitted_gain``). On fresh seeds
49 and 50 one matched step passed that check by 0.000 and took a control box 1.04 -> 13.46 mm
(docs/decisions.md, "A box on a sliding boundary"). For every training case and box of a guard-study
record file (``--records``, e.g. ``bench/sweep/conebeam-guard/matching-share.jsonl``: the matched chain),
the case is opened as the benchmark opens it (both geometry files), ISO-100, then the default native step
on the recorded box; where the step is kept, local NCC refines the box again on the images as given from
the same state (``rso.core.native.second_opinion.disagreement_mm``) and the distance between the two
corrections' box means is recorded with the box TRE before and after, and with the share of the box's
RMS motion the step leaves (``motion_left``: 0 takes the box back to no motion) and the share of it the
step takes back (``undone_share``, -sum(c . u) / sum(|u|^2), the earlier rule's measure). One JSON line
per box.

    python scripts/matched_second_opinion_study.py \\
        --records bench/sweep/conebeam-guard/matching-share.jsonl \\
        --cases-root ~/.cache/rso-registration/cases --cases-root /tmp/cases \\
        --out bench/sweep/conebeam-guard/matched-motion-left.jsonl --min-motion-left 0

Settings are chosen on the training anatomies' records only; a scored run's boxes may be replayed for a
diagnosis (``bench/results-conebeam-11/matched-records.jsonl``, made from its arm records).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from box_step_replay import add_guard_options, step_settings, window_problem  # noqa: E402
from conebeam_study import case_inputs, case_spec, iso_session  # noqa: E402

from rso.core.boxes import box_from_ras  # noqa: E402
from rso.core.native import motion_left  # noqa: E402
from rso.core.native.second_opinion import disagreement_mm  # noqa: E402
from rso.core.workflow import build_network  # noqa: E402
from rso.settings import EngineSettings, RSOSettings  # noqa: E402


def motion_row(problem, correction) -> dict:
    """The share of the box's RMS motion the correction leaves (the guard's ``motion_left``, judged here
    however little the box moves), with the current field's box mean and RMS (LPS mm)."""
    current, in_box = problem.current_mm[problem.box.slices], correction[problem.box.slices]
    left = motion_left(in_box, current, min_motion_mm=0.0)
    # The guard's measure before the motion left (a step through no motion counts as undoing it all):
    # recorded to say what the earlier rule would have done.
    undone = -float((in_box * current).sum() / max(float((current**2).sum()), 1e-12))
    return {
        "current_mean_mm": current.reshape(-1, 3).mean(axis=0).round(2).tolist(),
        "motion_rms_mm": round(float(np.sqrt((current**2).sum(axis=-1).mean())), 3),
        "motion_left": None if left is None else round(left, 3),
        "undone_share": round(undone, 3),
    }


def study_case(session, records: list[dict], settings: RSOSettings) -> list[dict]:
    given = (session.fixed, session.moving)
    rows = []
    for record in records:
        box = box_from_ras(session.grid, record["ras"])
        before_state = session.state
        before = session.metrics(box=box)["tre_mm_box"]["mean"]
        step = session.rso(box, settings)
        row = {key: record[key] for key in ("case", "kind", "box")}
        row |= {"tre_before": round(before, 3), "kept": step.accepted, "guard": step.guard}
        if step.accepted:
            row["tre_after"] = round(step.metrics["tre_mm_box"]["mean"], 3)
            problem = window_problem(session, given, box, before_state)
            correction = window_problem(session, given, box, session.state).current_mm - problem.current_mm
            row["disagreement_mm"] = round(disagreement_mm(problem, settings, correction), 3)
            row |= motion_row(problem, correction)
            session.undo()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "guard"}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True, help="a guard-study JSONL (matched chain)")
    parser.add_argument("--cases-root", type=Path, action="append", required=True, help="where cases are")
    parser.add_argument("--out", type=Path, required=True)
    add_guard_options(parser)
    args = parser.parse_args()
    settings = step_settings(args)
    torch.set_num_threads(2)
    records = [json.loads(line) for line in args.records.read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("chain", "matched") == "matched"]
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for name in dict.fromkeys(r["case"] for r in records):
            folder = next(root / name for root in args.cases_root if (root / name).is_dir())
            folder, phase = case_spec(str(folder))
            session, _ = iso_session(engine, case_inputs(folder, phase), network, 100)
            for row in study_case(session, [r for r in records if r["case"] == name], settings):
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
