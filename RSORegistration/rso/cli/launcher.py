"""The command line starts its heavy subcommands again once, with tcmalloc preloaded
(rso.service.allocator)."""

from __future__ import annotations

import os
import sys

from rso.service.allocator import with_tcmalloc

HEAVY_SUBCOMMANDS = ("register", "demo", "bench", "batch", "train", "worker", "review", "simulate", "phases")


def relaunch_with_tcmalloc(argv: list[str]) -> None:
    """Replace this process by the same command with tcmalloc preloaded, for the heavy subcommands only."""
    subcommand = next((arg for arg in argv if not arg.startswith("-")), None)
    if subcommand not in HEAVY_SUBCOMMANDS:
        return
    env = with_tcmalloc(dict(os.environ))
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "rso.cli", *argv], env)
