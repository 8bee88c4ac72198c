"""Where the engine keeps what it can make again: fetched CTs, simulated cases, Slicer's sessions.

Everything lives under one folder the user can clear, ``~/.cache/rso-registration``.
``$RSO_CACHE_DIR`` moves the fetched data (and the cases beside it), e.g. for CI.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RSO_CACHE_DIR"


def cache_root() -> Path:
    return Path.home() / ".cache" / "rso-registration"


def data_dir() -> Path:
    """The fetched chest CTs: ``$RSO_CACHE_DIR`` if set, else ``~/.cache/rso-registration/data``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else cache_root() / "data"


def cases_dir() -> Path:
    """Simulated cases (demo, benchmark, training), beside the data they are made from."""
    return data_dir().parent / "cases"


def sessions_dir() -> Path:
    """Session folders the Slicer module and the review app start when the user names none."""
    return cache_root() / "sessions"
