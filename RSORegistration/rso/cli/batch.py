"""``batch``: register every pair of a CSV, each in a process of its own, on a local or existing Dask
cluster."""

from __future__ import annotations

import contextlib
import logging
import sys

from rso.cli.common import add_engine_arguments, add_settings, engine_from_args
from rso.cli.common import settings_from_args as common_settings_from_args
from rso.cli.register import ISO_PREFIX, add_rso_arguments, output_list, rso_settings_from_args
from rso.options import DEFAULT_BATCH_WORKERS, DEFAULT_OUTPUTS
from rso.settings import ISOSettings

EXIT_SOME_FAILED = 1


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="register many pairs (a CSV) on a Dask cluster: resumable, with a summary",
        description="Each pair of PAIRS.csv (columns fixed, moving, and optionally truth, mask, roi, name "
        "and every other per-pair input register takes: docs/remote.md) "
        "runs the general model, ISO and RSO on each of its roi boxes, in a process of its own. Pairs whose "
        "report.json is complete are skipped; a failed pair is recorded and the others go on. Writes "
        "<out>/<name>/ per pair and <out>/summary.csv, summary.json.",
    )
    parser.add_argument(
        "pairs", metavar="PAIRS.csv", help="the pairs; relative paths are relative to its folder"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_BATCH_WORKERS,
        metavar="N",
        help=f"pairs at once on a local Dask cluster (default {DEFAULT_BATCH_WORKERS})",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask cluster (e.g. tcp://10.0.0.5:8786) instead of a local one",
    )
    add_settings(parser.add_argument_group("ISO (the whole image)"), ISOSettings, ISO_PREFIX)
    add_rso_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch threads per pair (default: cores / workers)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="stop a pair after S seconds and record it as failed"
    )
    parser.add_argument("--figures", action="store_true", help="also write report.png for each pair")
    parser.add_argument(
        "--outputs",
        type=output_list,
        default=DEFAULT_OUTPUTS,
        metavar="LIST",
        help="each pair's files besides report.json and transform.h5, as register --outputs takes them "
        f"(default: {','.join(DEFAULT_OUTPUTS)})",
    )
    parser.add_argument(
        "--keep-sessions",
        action="store_true",
        help="keep each pair's session folder (a state per step, to reopen it); default: results only",
    )
    parser.set_defaults(func=run)


def settings_from_args(args):
    from rso.service.batch import BatchSettings

    return BatchSettings(
        engine=engine_from_args(args),
        iso=common_settings_from_args(ISOSettings, args, ISO_PREFIX),
        rso=rso_settings_from_args(args),
        figure=args.figures,
        keep_sessions=args.keep_sessions,
        outputs=args.outputs,
        threads=args.threads,
        timeout_s=args.timeout,
    )


def run(args) -> int:
    from rso.core.summary import format_table
    from rso.service.batch import read_pairs, run_batch

    total = len(read_pairs(args.pairs))  # a bad CSV fails here, before a cluster starts
    with contextlib.suppress(ImportError):  # if it is missing, run_batch says how to install it
        import distributed  # noqa: F401  (its import sets its loggers to INFO: quieten them after it)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's chatter would hide the results
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="pairs", unit="pair")

    def finished(row: dict) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{row['name']}: {row['status']}")
        else:
            print(
                f"{row['name']}: {row['status']}" + (f" ({row['error']})" if row["error"] else ""),
                file=sys.stderr,
            )

    try:
        summary = run_batch(
            args.pairs,
            args.out,
            settings_from_args(args),
            workers=args.workers,
            scheduler=args.scheduler,
            on_result=finished,
        )
    finally:
        if bar is not None:
            bar.close()
    columns = ("name", "status", "seconds", "rmse_hu", "tre_mm", "disk_mb", "session_mb")
    print(format_table([{c: row[c] for c in columns} for row in summary.rows]))
    totals = summary.totals
    print(
        f"{totals['done']} done, {totals['skipped']} skipped, {totals['failed']} failed; "
        f"{totals['disk_mb']:.1f} MB kept in {args.out}; summary: {summary.paths['csv']}"
    )
    return EXIT_SOME_FAILED if totals["failed"] else 0
