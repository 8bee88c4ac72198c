"""tcmalloc for the engine's processes, where the machine has it.

glibc's allocator returns the large buffers of 3-D convolutions to the system and page-faults them
in again on every iteration; tcmalloc keeps them. scripts/fp32_speed.py measured ISO at the demo grid
1.6x faster in fp32 with it (bench/README.md, Speed). A library cannot be preloaded into a running
Python, so a process that will do heavy work is started with LD_PRELOAD set: the command line starts
itself again once (rso.cli.launcher) and the worker client starts local workers so. ``RSO_TCMALLOC=0``
turns it off; without the library (Debian's libtcmalloc-minimal4) nothing changes.
"""

from __future__ import annotations

from pathlib import Path

TCMALLOC = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)
SWITCH = "RSO_TCMALLOC"


def tcmalloc_library() -> str | None:
    return next((path for path in TCMALLOC if Path(path).is_file()), None)


def with_tcmalloc(env: dict[str, str]) -> dict[str, str]:
    """``env`` with tcmalloc added to LD_PRELOAD (unchanged without the library, or with RSO_TCMALLOC=0)."""
    library = tcmalloc_library()
    preload = env.get("LD_PRELOAD", "")
    if library is None or env.get(SWITCH) == "0" or "tcmalloc" in preload:
        return env
    return {**env, "LD_PRELOAD": f"{library} {preload}".strip(), SWITCH: "0"}
