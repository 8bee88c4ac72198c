"""tcmalloc for the engine's heavy processes (rso.service.allocator, rso.cli.launcher)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rso.service.allocator import SWITCH, tcmalloc_library, with_tcmalloc


def test_tcmalloc_is_added_once_and_can_be_switched_off():
    library = tcmalloc_library()
    env = with_tcmalloc({"LD_PRELOAD": "libother.so"})
    if library is None:
        assert env == {"LD_PRELOAD": "libother.so"}  # without the library nothing changes
        return
    assert env["LD_PRELOAD"].split() == [library, "libother.so"] and env[SWITCH] == "0"
    assert with_tcmalloc(env) == env
    assert with_tcmalloc({SWITCH: "0"}) == {SWITCH: "0"}


@pytest.mark.skipif(
    tcmalloc_library() is None, reason="libtcmalloc-minimal4 is not installed (make tcmalloc)"
)
def test_the_command_line_restarts_heavy_subcommands_with_tcmalloc():
    """`rso-registration register` runs with tcmalloc mapped into the process; `fetch-data --help` is
    not restarted."""
    probe = (
        "import sys; from rso.cli import launcher; launcher.HEAVY_SUBCOMMANDS += ('probe',); "
        "sys.argv[1:] and launcher.relaunch_with_tcmalloc(sys.argv[1:]); "
        "print('tcmalloc' in open('/proc/self/maps').read())"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", SWITCH)}
    heavy = subprocess.run(
        [sys.executable, "-c", probe, "register", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "usage: rso-registration register" in heavy.stdout  # restarted as the real command line
    light = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert light.stdout.strip() == "False"
    mapped = subprocess.run(
        [sys.executable, "-c", "print('tcmalloc' in open('/proc/self/maps').read())"],
        capture_output=True,
        text=True,
        env=with_tcmalloc(env),
        timeout=60,
    )
    assert mapped.stdout.strip() == "True"
