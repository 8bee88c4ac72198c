"""What the guard would have done without its second opinion, in a benchmark run's boxes (#20).

For every box of ``--results`` where the second opinion ran (its ``rso_native`` arm records
``disagreement_mm``), the case is registered again as the benchmark registers it (general model, then
ISO-100; a TV case without geometry, or with its files given ``--tv-files``) and the box is stepped with
``max_disagreement_mm=0``: the guard of the gain alone. One JSON line per box (the box TRE after ISO-100,
without and with the second opinion).

    python scripts/second_opinion_counterfactual.py --results bench/results-conebeam-tv-3
    python scripts/second_opinion_counterfactual.py --results bench/results-conebeam-tv-10/xvi --tv-files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs  # noqa: E402

from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.settings import EngineSettings, ISOSettings, RSOSettings  # noqa: E402


def checked_arms(results: Path) -> dict[str, list[dict]]:
    """The native RSO arms whose step ran the second opinion, by case name."""
    arms = {}
    for path in sorted(results.glob("arm_*_rso_native.json")):
        arm = json.loads(path.read_text())
        if (arm["guard"] or {}).get("disagreement_mm") is not None:
            arms.setdefault(arm["case"]["name"], []).append(arm)
    return arms


def without_second_opinion(session, arm: dict) -> dict:
    box = session.pair.box_from_ras(arm["box"]["ras"])
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    record = session.rso(box, RSOSettings(max_disagreement_mm=0.0))
    after = record.metrics["tre_mm_box"]["mean"] if record.accepted else before
    if record.accepted:
        session.undo()
    return {
        "case": arm["case"]["name"],
        "box": f"{arm['box']['kind']}{arm['box']['index']}",
        "iso100": before,
        "old_guard": after,
        "old_declined": record.declined,
        "new": arm["metrics"]["tre_mm_box"]["mean"],
        "disagreement": arm["guard"]["disagreement_mm"],
        "new_declined": arm["declined"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--tv-files", action="store_true", help="register TV cases with their geometry files")
    args = parser.parse_args()
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out = args.results / "old_guard_counterfactual.jsonl"
    rows = []
    for arms in checked_arms(args.results).values():
        case = arms[0]["case"]
        inputs = case_inputs(Path(case["folder"]), case["moving_phase"], tv_files=args.tv_files)
        session = start_session(engine, inputs, network=network)
        session.general()
        session.iso(ISOSettings(iterations=100))
        for arm in arms:
            rows.append(without_second_opinion(session, arm))
            print(json.dumps(rows[-1]), flush=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
