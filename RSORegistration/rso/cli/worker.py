"""``worker``: serve the worker protocol on stdin/stdout (docs/worker-protocol.md), for Slicer and scripts."""

from __future__ import annotations


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="serve registration requests as JSON lines on stdin/stdout (for Slicer and scripts)",
        description="One long-lived engine process holding a session; see docs/worker-protocol.md.",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--sessions",
        metavar="DIR",
        help="where sessions opened by upload or by id live (default ~/.cache/rso-registration/sessions)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from rso.service.worker import serve_stdio

    serve_stdio(threads=args.threads, sessions=args.sessions)  # ends the process
    return 0
