"""Batch runs: many pairs through the three-step workflow, each pair in a process of its own, on Dask.

    rso-registration batch pairs.csv --out runs/ [--workers N] [--scheduler tcp://host:8786]

or, from Python (Slicer's console included; dask.distributed must be installed there)::

    from rso.service.batch import BatchSettings, run_batch
    summary = run_batch("pairs.csv", "runs", BatchSettings(iso=100), workers=2, on_result=print)

``BatchSettings`` holds the register command's EngineSettings and RSOSettings, and the batch's own choices.

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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rso.service.allocator import with_tcmalloc
from rso.errors import InputError
from rso.options import DEFAULT_BATCH_WORKERS, DEFAULT_ISO_ITERATIONS

if TYPE_CHECKING:  # imported where used: a Dask worker that runs only run_pair_process never loads torch
    from rso.core.session import RSOSettings
    from rso.core.workflow import EngineSettings

log = logging.getLogger(__name__)

COLUMNS = ("fixed", "moving", "truth", "mask", "roi", "name")
RESULT_FILES = ("warped.nii.gz", "displacement.nii.gz", "difference.nii.gz", "report.json")
SUMMARY_FIELDS = ("name", "status", "seconds", "wall_seconds", "rmse_hu", "tre_mm", "steps", "disk_mb",
                  "session_mb", "error", "fixed", "moving")
ENGINE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the rso package


@dataclass(frozen=True)
class Pair:
    """One row of the CSV, its paths absolute."""

    name: str
    fixed: str
    moving: str
    truth: str | None = None
    mask: str | None = None
    boxes_ras: tuple[tuple[float, ...], ...] = ()


def _default_engine():
    from rso.core.workflow import EngineSettings

    return EngineSettings()


def _default_rso():
    from rso.core.session import RSOSettings

    return RSOSettings()


@dataclass(frozen=True)
class BatchSettings:
    """What every pair runs with: the register command's choices, and the batch's own."""

    engine: EngineSettings = field(default_factory=_default_engine)
    iso: int = DEFAULT_ISO_ITERATIONS
    rso: RSOSettings = field(default_factory=_default_rso)
    figure: bool = False  # report.png per pair (matplotlib, about a second each)
    keep_sessions: bool = False  # keep <pair>/session/ (a state per step) for reopening
    threads: int | None = None  # torch threads per pair; None: cores / workers on a local cluster
    timeout_s: float | None = None  # a pair that runs longer is stopped and recorded as failed

    def to_json(self) -> str:
        """Plain JSON, so that a Dask worker passes the settings on without importing torch."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "BatchSettings":
        from rso.core.session import RSOSettings
        from rso.core.workflow import EngineSettings

        data = json.loads(text)
        return cls(**{**data, "engine": EngineSettings.from_dict(data["engine"]), "rso": RSOSettings(**data["rso"])})


# ---------------------------------------------------------------------------------- the CSV
def read_pairs(csv_path: str | Path) -> list[Pair]:
    """Every row of the CSV as a Pair; InputError names the first bad row before anything runs."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"pairs file not found: {csv_path}")
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8-sig"))))
    header = [name.strip() for name in (rows[0].keys() if rows else [])]
    if not rows or not {"fixed", "moving"} <= set(header):
        raise InputError(f"{csv_path.name} needs a header with columns fixed and moving and at least one row")
    unknown = sorted(set(header) - set(COLUMNS))
    if unknown:
        raise InputError(f"{csv_path.name}: unknown column(s) {', '.join(unknown)}; columns: {', '.join(COLUMNS)}")
    pairs = [_pair(index, {k.strip(): (v or "").strip() for k, v in row.items()}, csv_path.parent)
             for index, row in enumerate(rows, start=1)]
    names = [pair.name for pair in pairs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"{csv_path.name}: pair names must be unique; repeated: {', '.join(duplicates)}")
    return pairs


def _pair(index: int, row: dict, base: Path) -> Pair:
    where = f"row {index}"
    for column in ("fixed", "moving"):
        if not row.get(column):
            raise InputError(f"{where}: {column} is empty")
    path = lambda column: str((base / row[column]).resolve()) if row.get(column) else None  # noqa: E731
    name = row.get("name") or f"{index:03d}-{Path(row['moving']).name.split('.')[0]}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    return Pair(name, path("fixed"), path("moving"), path("truth"), path("mask"), _boxes(row.get("roi", ""), where))


def _boxes(text: str, where: str) -> tuple[tuple[float, ...], ...]:
    boxes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            values = tuple(float(v) for v in re.split(r"[\s,]+", part))
        except ValueError:
            values = ()
        if len(values) != 6:
            raise InputError(f"{where}: roi {part!r} is not 6 numbers R1 A1 S1 R2 A2 S2 (RAS mm)")
        boxes.append(values)
    return tuple(boxes)


# ---------------------------------------------------------------------------------- one pair
def pair_complete(folder: Path) -> bool:
    """Whether a pair's results are all there: the images, and a report with its final metrics."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return report.get("final") is not None and all((folder / name).is_file() for name in RESULT_FILES)


def run_pair(pair: Pair, out: Path, settings: BatchSettings) -> dict:
    """Register one pair into ``out/<name>`` in this process; returns what the summary needs of the run."""
    from rso.core.workflow import RegisterJob, run_register_job

    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    folder = out / pair.name
    job = RegisterJob(fixed=pair.fixed, moving=pair.moving, out=str(folder), engine=settings.engine, iso=settings.iso,
                      boxes_ras=[list(box) for box in pair.boxes_ras], rso=settings.rso, truth=pair.truth,
                      mask=pair.mask, figure=settings.figure)
    try:
        run_register_job(job)
    finally:
        session_bytes = disk_bytes(folder / "session")
        if not settings.keep_sessions:
            shutil.rmtree(folder / "session", ignore_errors=True)
    return {"session_bytes": session_bytes}


def run_pair_process(pair: Pair, out: str, settings_json: str, timeout_s: float | None = None) -> dict:
    """A Dask task: run one pair in a fresh process; its summary row, failed or done (it never raises)."""
    start = time.perf_counter()
    env = with_tcmalloc({**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ENGINE_ROOT),
                                                                                 os.environ.get("PYTHONPATH")]))})
    command = [sys.executable, "-m", "rso.service.batch",
               json.dumps({"pair": asdict(pair), "out": out, "settings": settings_json})]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return failed_row(pair, f"stopped after {timeout_s:.0f} s (timeout)", time.perf_counter() - start)
    wall = time.perf_counter() - start
    reply = _last_json_line(done.stdout)
    if done.returncode != 0 or reply is None or reply.get("error"):
        error = (reply or {}).get("error") or _last_line(done.stderr) or f"exit code {done.returncode}"
        return failed_row(pair, error, wall)
    return result_row(pair, Path(out) / pair.name, "done", wall, reply.get("session_bytes"))


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------- the rows
def result_row(pair: Pair, folder: Path, status: str, wall: float | None, session_bytes: int | None) -> dict:
    """A summary row from a pair's report.json: its seconds (the steps'), final RMSE and TRE, disk."""
    report = json.loads((folder / "report.json").read_text())
    final = report.get("final") or {}
    return {
        "name": pair.name, "status": status,
        "seconds": round(sum(step["seconds"] for step in report["steps"]), 2),
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "rmse_hu": final.get("rmse_hu"), "tre_mm": (final.get("tre_mm") or {}).get("mean"),
        "steps": "+".join(step["kind"] for step in report["steps"]),
        "disk_mb": megabytes(disk_bytes(folder)),
        "session_mb": megabytes(session_bytes) if session_bytes is not None else None,
        "error": None, "fixed": pair.fixed, "moving": pair.moving,
    }


def failed_row(pair: Pair, error: str, wall: float | None) -> dict:
    return {**{name: None for name in SUMMARY_FIELDS}, "name": pair.name, "status": "failed",
            "wall_seconds": round(wall, 1) if wall is not None else None, "error": " ".join(error.split())[:500],
            "fixed": pair.fixed, "moving": pair.moving}


def disk_bytes(path: Path) -> int:
    """What ``du`` counts: allocated blocks (file sizes where the platform has no block count)."""
    if not path.exists():
        return 0
    files = [path] if path.is_file() else [Path(root) / name for root, _, names in os.walk(path) for name in names]
    total = 0
    for file in files:
        stat = file.stat()
        total += stat.st_blocks * 512 if hasattr(stat, "st_blocks") else stat.st_size
    return total


def megabytes(count: int) -> float:
    return round(count / 1e6, 2)


# ---------------------------------------------------------------------------------- the run
@dataclass
class BatchSummary:
    rows: list[dict] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def totals(self) -> dict:
        return {"pairs": len(self.rows), **{s: self.count(s) for s in ("done", "skipped", "failed")},
                "disk_mb": round(sum(row["disk_mb"] or 0 for row in self.rows), 2),
                "wall_seconds": round(sum(row["wall_seconds"] or 0 for row in self.rows), 1)}


def run_batch(pairs_csv: str | Path, out: str | Path, settings: BatchSettings | None = None,
              workers: int = DEFAULT_BATCH_WORKERS, scheduler: str | None = None,
              on_result: Callable[[dict], None] | None = None) -> BatchSummary:
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
        summary.rows += _run_on_dask(todo, out, settings, workers, scheduler, on_result)
    order = {pair.name: index for index, pair in enumerate(pairs)}
    summary.rows.sort(key=lambda row: order[row["name"]])
    summary.paths = write_summary(summary, out, settings)
    return summary


def _run_on_dask(pairs: list[Pair], out: Path, settings: BatchSettings, workers: int, scheduler: str | None,
                 on_result: Callable[[dict], None] | None) -> list[dict]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("batch runs need dask.distributed: pip install 'rso-registration[batch]' "
                         "(in Slicer: slicer.util.pip_install('dask[distributed]'))") from None
    if scheduler is not None:
        try:
            client, cluster = Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        # Everything on 127.0.0.1 and free ports; the scheduler's HTTP server (its dashboard) included.
        cluster = LocalCluster(n_workers=min(workers, len(pairs)), threads_per_worker=1, processes=True,
                               host="127.0.0.1", scheduler_port=0, dashboard_address="127.0.0.1:0",
                               silence_logs=logging.WARNING)
        client = Client(cluster)
    rows = []
    try:
        futures = {client.submit(run_pair_process, pair, str(out), settings.to_json(), settings.timeout_s,
                                 key=f"rso-pair-{pair.name}-{time.time_ns()}", pure=False): pair for pair in pairs}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as exc:  # the Dask worker itself died (e.g. out of memory) or the task could not run
                row = failed_row(futures[future], f"{type(exc).__name__}: {exc}", None)
            rows.append(row)
            if on_result:
                on_result(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows


def write_summary(summary: BatchSummary, out: Path, settings: BatchSettings) -> dict[str, Path]:
    """summary.csv (a row per pair) and summary.json (rows, totals and settings), each written atomically."""
    from rso.core.imageio import write_bytes_atomically

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary.rows)
    document = {"totals": summary.totals, "pairs": summary.rows, "settings": asdict(settings)}
    return {"csv": write_bytes_atomically(table.getvalue().encode(), out / "summary.csv"),
            "json": write_bytes_atomically(json.dumps(document, indent=1).encode(), out / "summary.json")}


# ---------------------------------------------------------------------------------- the child
def _child(argument: str) -> int:
    """``python -m rso.service.batch <json>``: one pair; the last stdout line is its JSON reply."""
    from rso import silence_known_warnings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    silence_known_warnings()
    request = json.loads(argument)
    pair = Pair(**{**request["pair"], "boxes_ras": tuple(map(tuple, request["pair"]["boxes_ras"]))})
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
