"""Batch runs: many pairs through the three-step workflow, each pair in a process of its own, on Dask.

    rso-registration batch pairs.csv --out runs/ [--workers N] [--scheduler tcp://host:8786]

or, from Python (Slicer's console included; dask.distributed must be installed there)::

    from rso.service.batch import BatchSettings, run_batch
    summary = run_batch("pairs.csv", "runs", BatchSettings(iso=100), workers=2, on_result=print)

``BatchSettings`` holds the register command's EngineSettings, ISOSettings and RSOSettings, and the
batch's own choices.

``pairs.csv`` has a header; columns ``fixed`` and ``moving`` (files), and optionally ``truth`` (a
displacement field, for TRE), ``mask`` (where metrics are measured), ``roi`` (RSO boxes in RAS mm,
"R1 A1 S1 R2 A2 S2", several separated by ";") and ``name``. Relative paths are relative to the
CSV's folder. Each pair's results go to ``<out>/<name>/``; ``summary.csv`` and ``summary.json``
in ``<out>`` list every pair (status, seconds, RMSE, TRE, disk), written atomically.

* **Resumable.** A pair whose report.json is complete is skipped; a failed pair is recorded with
  its one-line error and the others go on. Running again retries only what is missing.
* **One process per pair.** Each Dask task starts ``python -m rso.service.batch <pair>`` and waits:
  a fresh process gives every pair the same thread count and all its memory back, and a crash in
  native code (torch, ITK) fails that pair, never the Dask worker. The Dask workers themselves
  stay light (this module imports neither torch nor dask at the top).
* **Disk.** Only the results are kept unless ``keep_sessions`` (the session folder holds a state
  per step); the summary gives what each pair keeps and what its session took (``du``'s count).

The CSV and the summary rows live in ``rso.service.batch_pairs``, the Dask runs in
``rso.service.batch_dask``; their names are importable from here too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from rso.errors import InputError
from rso.options import DEFAULT_BATCH_WORKERS, DEFAULT_OUTPUTS
from rso.service.batch_dask import ENGINE_ROOT, run_on_dask, run_pair_process
from rso.service.batch_pairs import (
    COLUMNS,
    RESULT_FILES,
    SUMMARY_FIELDS,
    Pair,
    disk_bytes,
    failed_row,
    megabytes,
    pair_complete,
    read_pairs,
    result_row,
)
from rso.settings import EngineSettings, ISOSettings, PairInputs, RSOSettings

# The batch's API, batch_pairs' and batch_dask's names included (importers use rso.service.batch).
__all__ = [
    "COLUMNS",
    "ENGINE_ROOT",
    "RESULT_FILES",
    "SUMMARY_FIELDS",
    "BatchSettings",
    "BatchSummary",
    "Pair",
    "disk_bytes",
    "failed_row",
    "megabytes",
    "pair_complete",
    "read_pairs",
    "result_row",
    "run_batch",
    "run_pair",
    "run_pair_process",
    "write_summary",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """What every pair runs with: the register command's choices, and the batch's own."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    iso: ISOSettings = field(default_factory=ISOSettings)
    rso: RSOSettings = field(default_factory=RSOSettings)
    figure: bool = False  # report.png per pair (matplotlib, about a second each)
    keep_sessions: bool = False  # keep <pair>/session/ (a state per step) for reopening
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS  # besides report.json and transform.h5 (results.OUTPUTS)
    threads: int | None = None  # torch threads per pair; None: cores / workers on a local cluster
    timeout_s: float | None = None  # a pair that runs longer is stopped and recorded as failed

    def to_json(self) -> str:
        """Plain JSON, so that a Dask worker passes the settings on without importing torch."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BatchSettings:
        data = json.loads(text)
        steps = {"engine": EngineSettings, "iso": ISOSettings, "rso": RSOSettings}
        steps = {name: kind.from_dict(data[name]) for name, kind in steps.items()}
        return cls(**{**data, **steps, "outputs": tuple(data["outputs"])})


# ---------------------------------------------------------------------------------- one pair
def run_pair(pair: Pair, out: Path, settings: BatchSettings) -> dict:
    """Register one pair into ``out/<name>`` in this process; returns what the summary needs of the run."""
    from rso.core.workflow import RegisterJob, run_register_job

    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    folder = out / pair.name
    own = {"fixed": pair.fixed, "moving": pair.moving, "truth": pair.truth, "metrics_mask": pair.mask}
    columns, names = dict(pair.inputs), {f.name for f in fields(PairInputs)}
    job = RegisterJob(
        inputs=PairInputs.from_dict({**own, **{k: v for k, v in columns.items() if k in names}}),
        out=str(folder),
        engine=settings.engine,
        iso=settings.iso,
        rso=settings.rso,
        boxes_ras=[list(box) for box in pair.boxes_ras],
        figure=settings.figure,
        outputs=tuple(settings.outputs),
        **{k: v for k, v in columns.items() if k not in names},
    )
    try:
        run_register_job(job)
    finally:
        session_bytes = disk_bytes(folder / "session")
        if not settings.keep_sessions:
            shutil.rmtree(folder / "session", ignore_errors=True)
    return {"session_bytes": session_bytes}


# ---------------------------------------------------------------------------------- the run
@dataclass
class BatchSummary:
    rows: list[dict] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def totals(self) -> dict:
        return {
            "pairs": len(self.rows),
            **{s: self.count(s) for s in ("done", "skipped", "failed")},
            "disk_mb": round(sum(row["disk_mb"] or 0 for row in self.rows), 2),
            "wall_seconds": round(sum(row["wall_seconds"] or 0 for row in self.rows), 1),
        }


def run_batch(
    pairs_csv: str | Path,
    out: str | Path,
    settings: BatchSettings | None = None,
    workers: int = DEFAULT_BATCH_WORKERS,
    scheduler: str | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> BatchSummary:
    """Register every pair of the CSV that is not complete yet; write and return the summary.

    ``workers``: processes of a local dask.distributed cluster (one pair each at a time);
    ``scheduler``: the address of an existing Dask cluster instead (its workers need this package
    and must see the CSV's files and ``out``). ``on_result`` gets each pair's row as it finishes.
    """
    pairs, out = read_pairs(pairs_csv), Path(out).resolve()
    settings = settings or BatchSettings()
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} is a file")
    if workers < 1:
        raise InputError("workers must be >= 1")
    out.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary()
    todo = []
    for pair in pairs:
        if pair_complete(out / pair.name):
            summary.rows.append(result_row(pair, out / pair.name, "skipped", None, None))
            if on_result:
                on_result(summary.rows[-1])
        else:
            todo.append(pair)
    if todo:
        if scheduler is None and settings.threads is None:
            settings = replace(settings, threads=max(1, (os.cpu_count() or 1) // min(workers, len(todo))))
        summary.rows += run_on_dask(
            todo, out, settings.to_json(), settings.timeout_s, workers, scheduler, on_result
        )
    order = {pair.name: index for index, pair in enumerate(pairs)}
    summary.rows.sort(key=lambda row: order[row["name"]])
    summary.paths = write_summary(summary, out, settings)
    return summary


def write_summary(summary: BatchSummary, out: Path, settings: BatchSettings) -> dict[str, Path]:
    """summary.csv (a row per pair) and summary.json (rows, totals and settings), each written atomically."""
    from rso.core.imageio import write_bytes_atomically

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary.rows)
    document = {"totals": summary.totals, "pairs": summary.rows, "settings": asdict(settings)}
    return {
        "csv": write_bytes_atomically(table.getvalue().encode(), out / "summary.csv"),
        "json": write_bytes_atomically(json.dumps(document, indent=1).encode(), out / "summary.json"),
    }


# ---------------------------------------------------------------------------------- the child
def _child(argument: str) -> int:
    """``python -m rso.service.batch <json>``: one pair; the last stdout line is its JSON reply."""
    from rso import silence_known_warnings

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    silence_known_warnings()
    request = json.loads(argument)
    fields = request["pair"]
    tuples = {name: tuple(map(tuple, fields[name])) for name in ("boxes_ras", "inputs")}
    pair = Pair(**{**fields, **tuples})
    try:
        reply, code = run_pair(pair, Path(request["out"]), BatchSettings.from_json(request["settings"])), 0
    except InputError as exc:
        reply, code = {"error": str(exc)}, 2
    except Exception as exc:  # the traceback goes to stderr; the summary gets one line
        traceback.print_exc()
        reply, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    print(json.dumps(reply), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
