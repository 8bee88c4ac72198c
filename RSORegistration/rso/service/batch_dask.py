"""A batch's pairs on Dask: a local cluster or an existing one, each pair in a fresh child process.

Each Dask task (``run_pair_process``) starts ``python -m rso.service.batch <json>`` (that module's
``_child``) and waits for its last stdout line, the pair's JSON reply. This module imports neither
torch nor dask at the top, so the Dask workers that load it stay light.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rso.errors import InputError
from rso.service.allocator import with_tcmalloc
from rso.service.batch_pairs import Pair, failed_row, result_row

ENGINE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the rso package
CHILD_MODULE = "rso.service.batch"  # ``python -m`` runs its _child on one pair


def run_pair_process(pair: Pair, out: str, settings_json: str, timeout_s: float | None = None) -> dict:
    """A Dask task: run one pair in a fresh process; its summary row, failed or done (it never raises)."""
    start = time.perf_counter()
    env = with_tcmalloc(
        {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ENGINE_ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    command = [
        sys.executable,
        "-m",
        CHILD_MODULE,
        json.dumps({"pair": asdict(pair), "out": out, "settings": settings_json}),
    ]
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


def run_on_dask(
    pairs: list[Pair],
    out: Path,
    settings_json: str,
    timeout_s: float | None,
    workers: int,
    scheduler: str | None,
    on_result: Callable[[dict], None] | None,
) -> list[dict]:
    """Every pair through ``run_pair_process`` on Dask; their summary rows, in the order they finish.

    ``settings_json``: BatchSettings.to_json(); ``timeout_s``: per pair (None: no limit); ``workers``:
    processes of a local cluster, unless ``scheduler`` names an existing one.
    """
    client, cluster = _dask_client(scheduler, min(workers, len(pairs)))
    from dask.distributed import as_completed

    rows = []
    try:
        futures = {
            client.submit(
                run_pair_process,
                pair,
                str(out),
                settings_json,
                timeout_s,
                key=f"rso-pair-{pair.name}-{time.time_ns()}",
                pure=False,
            ): pair
            for pair in pairs
        }
        for future in as_completed(futures):
            try:
                row = future.result()
            # The Dask worker itself died (e.g. out of memory) or the task could not run.
            except Exception as exc:
                row = failed_row(futures[future], f"{type(exc).__name__}: {exc}", None)
            rows.append(row)
            if on_result:
                on_result(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows


def _dask_client(scheduler: str | None, workers: int):
    """(client, cluster): a client of the scheduler at ``scheduler`` (cluster None), else of a new local
    cluster of ``workers`` processes, which the caller closes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            "batch runs need dask.distributed: pip install 'rso-registration[batch]' "
            "(in Slicer: slicer.util.pip_install('dask[distributed]'))"
        ) from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    # Everything on 127.0.0.1 and free ports; the scheduler's HTTP server (its dashboard) included.
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.WARNING,
    )
    return Client(cluster), cluster
