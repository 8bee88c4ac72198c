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
current field the step undoes (``undone_share``: 1 takes the box back to no motion). One JSON line per box.

    python scripts/matched_second_opinion_study.py \\
        --records bench/sweep/conebeam-guard/matching-share.jsonl \\
        --cases-root ~/.cache/rso-registration/cases --cases-root /tmp/cases \\
        --out bench/sweep/conebeam-guard/matched-second-opinion.jsonl

Settings are chosen on the training anatomies' records only; a scored run's boxes may be replayed for a
diagnosis (``bench/results-conebeam-11/matched-records.jsonl``, made from its arm records).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from box_step_replay import window_problem  # noqa: E402
from conebeam_study import case_inputs, case_spec, iso_session  # noqa: E402

from rso.core.boxes import box_from_ras  # noqa: E402
from rso.core.native import undone_share  # noqa: E402
from rso.core.native.second_opinion import disagreement_mm  # noqa: E402
from rso.core.workflow import build_network  # noqa: E402
from rso.settings import EngineSettings, RSOSettings  # noqa: E402


def undone_row(problem, correction) -> dict:
    """The share of the box's current field the correction undoes (the guard's ``undone_share``, judged
    here however little the box moves), with the current field's box mean (LPS mm)."""
    current = problem.current_mm[problem.box.slices]
    share = undone_share(correction[problem.box.slices], current, min_motion_mm=0.0)
    mean = current.reshape(-1, 3).mean(axis=0).round(2).tolist()
    return {"current_mean_mm": mean, "undone_share": None if share is None else round(share, 3)}


def study_case(session, records: list[dict]) -> list[dict]:
    settings, given = RSOSettings(), (session.fixed, session.moving)
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
            row |= undone_row(problem, correction)
            session.undo()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "guard"}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True, help="a guard-study JSONL (matched chain)")
    parser.add_argument("--cases-root", type=Path, action="append", required=True, help="where cases are")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
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
            for row in study_case(session, [r for r in records if r["case"] == name]):
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
