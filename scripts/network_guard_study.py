"""Whether a network RSO step (direct, crop) could be guarded as native RSO is: box gains against TRE.

Until this study the network modes kept every step; on the cone-beam benchmark `direct` took the control
boxes' median from 1.28 to 5.53 mm. For every cone-beam case of the training anatomies (``--case``,
folders made by ``rso-registration simulate --preset xvi|truebeam``), ISO-100 as the benchmark runs it
(matched where the case has FDK geometry), then on two misaligned, one residual and two control boxes
(40 mm) each network mode's step (400 iterations, local compose), scored by the box's TRE change and by
the MIND gain in the box (``rso.core.iso_guard.given_gain``, box inside the fit mask) on the images as
given (what the step fits) and on the artefact-matched pair (which it does not). The guard is off
(``min_unfitted_gain`` -1e9) and each step is undone after it. One JSON line per (case, box, mode);
``--summary`` replays ``gain >= X`` rules.

    python scripts/network_guard_study.py --case DIR[:K] ... --out bench/sweep/network-guard/runs.jsonl
    python scripts/network_guard_study.py --summary bench/sweep/network-guard/runs.jsonl

lung2, the held-out patient, is never used here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conebeam_study import case_inputs, case_spec  # noqa: E402

from rso.core.iso_guard import given_gain  # noqa: E402
from rso.core.workflow import build_network, start_session  # noqa: E402
from rso.evaluation.box_kinds import pick_boxes  # noqa: E402
from rso.settings import EngineSettings, ISOSettings, RSOSettings  # noqa: E402

BOXES = (("misaligned", 2), ("residual", 1), ("control", 2))
MODES = ("direct", "crop")
# Which pair the step fits: the images as given (the network modes until this study) or the matched pair.
FITS = ("given", "matched")
log = logging.getLogger("network_guard_study")


def box_mask(session, box) -> torch.Tensor:
    """(1, 1, z, y, x) 0/1 on the model grid: the box, inside the fit mask where there is one."""
    mask = torch.zeros_like(session.pair.fixed_t)
    mask[(..., *box.voxels.slices)] = 1.0
    return mask if session.pair.fit_t is None else mask * session.pair.fit_t


def gains(session, box, before: np.ndarray, after: np.ndarray) -> dict:
    """The MIND gain in the box from field ``before`` to ``after`` (3, z, y, x voxels) on each pair."""
    pair, mask = session.pair, box_mask(session, box)
    start, proposed = (torch.from_numpy(f).to(pair.fixed_t)[None] for f in (before, after))
    out = {"given": given_gain(session.net.warp, pair.network_inputs(False), start, proposed, mask)}
    if session.geometry:
        out["matched"] = given_gain(session.net.warp, pair.network_inputs(True), start, proposed, mask)
    return out


def study(cases: list[str], out: Path, modes: tuple[str, ...] = MODES, fits: tuple[str, ...] = FITS) -> None:
    engine = EngineSettings(device="cpu", precision="fp32")
    network = build_network(engine)
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in cases:
        folder, phase = case_spec(spec)
        session = start_session(engine, case_inputs(folder, phase), network=network)
        session.general()
        session.iso(ISOSettings(iterations=100))
        for kind, count in BOXES:
            for index, box in enumerate(pick_boxes(session, kind, count, 40.0)):
                before = session.field_voxels
                tre_before = session.metrics(box=box)["tre_mm_box"]["mean"]
                for mode, fit in ((mode, fit) for mode in modes for fit in fits):
                    unguarded = RSOSettings(
                        mode=mode,
                        compose="local",
                        iterations=400,
                        min_unfitted_gain=-1e9,
                        match_artefacts=fit == "matched",
                    )
                    record = session.rso(box, unguarded)
                    row = {
                        "case": folder.name,
                        "matched": bool(session.geometry),
                        "kind": kind,
                        "index": index,
                        "mode": mode,
                        "fit": fit,
                        "tre_before": tre_before,
                        "tre_after": record.metrics["tre_mm_box"]["mean"],
                        "seconds": record.seconds,
                        "gains": gains(session, box, before, session.field_voxels),
                    }
                    session.undo()
                    log.info("%s", row)
                    with out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")


def summary(path: Path) -> None:
    """Each (mode, fitted pair) judged on the other pair: the steps ``gain >= X`` keeps, and their TRE."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for mode, fit in ((mode, fit) for mode in MODES for fit in FITS):
        judge = "given" if fit == "matched" else "matched"
        scored = [r for r in rows if r["mode"] == mode and r.get("fit", "given") == fit]
        for threshold in (None, 0.0, 0.1, 0.2) if scored else ():
            kept = [r for r in scored if threshold is None or r["gains"][judge] >= threshold]
            change = [r["tre_after"] - r["tre_before"] for r in kept]
            print(
                f"{mode:6s} fits {fit:7s} judged on {judge:7s} gain >= {threshold!s:4s}: kept "
                f"{len(kept):2d}/{len(scored):2d}, better by > 0.5 mm {sum(c < -0.5 for c in change):2d}, "
                f"worse by > 0.5 mm {sum(c > 0.5 for c in change):2d}, worst {max(change, default=0):+.2f} mm"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], metavar="DIR[:K]")
    parser.add_argument("--out", type=Path, default=Path("bench/sweep/network-guard/runs.jsonl"))
    parser.add_argument("--mode", action="append", choices=MODES, help="only these modes (default: all)")
    parser.add_argument("--fit", action="append", choices=FITS, help="only these fitted pairs (default: all)")
    parser.add_argument("--summary", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.summary:
        summary(args.summary)
    else:
        study(args.case, args.out, tuple(args.mode or MODES), tuple(args.fit or FITS))


if __name__ == "__main__":
    main()
