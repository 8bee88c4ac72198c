"""Ways the tests reach a worker that shares nothing with the client but the protocol.

* ``isolated_worker_command``: a plain subprocess with an empty environment, another HOME and
  working folder, and a log of every line the client sent.
* ``SshServer``: a real OpenSSH server on 127.0.0.1 and a free port, with throw-away host and
  client keys in a temporary folder (the Makefile installs openssh-server when it is absent).
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD_START_S = 15.0


def worker_program(sessions: Path) -> str:
    """The remote command line: the documented ``rso-registration worker``, with this venv's absolute path
    (a non-interactive SSH login does not put the venv on PATH)."""
    program = Path(sys.executable).with_name("rso-registration")
    start = shlex.quote(str(program)) if program.is_file() else f"{shlex.quote(sys.executable)} -m rso.cli"
    return f"{start} worker --threads 2 --sessions {shlex.quote(str(sessions))}"


def isolated_worker_command(base: Path, log: Path | None = None) -> list[str]:
    """A worker with an empty environment, its own HOME, working folder and sessions under ``base``."""
    for name in ("home", "cwd"):
        (base / name).mkdir(parents=True, exist_ok=True)
    worker = worker_program(base / "sessions")
    script = f"cd {shlex.quote(str(base / 'cwd'))} && " + (
        f"tee {shlex.quote(str(log))} | {worker}" if log else worker
    )
    return ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={base / 'home'}", "sh", "-c", script]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sshd_missing_reason() -> str | None:
    """Why an SSH server cannot run here, or None."""
    for program in ("ssh", "ssh-keygen"):
        if shutil.which(program) is None:
            return f"no {program}: install openssh-client (`make test` does, as root on Debian)"
    if sshd_program() is None:
        return "no sshd: install openssh-server (`make test` does when it runs as root on Debian)"
    return None


def sshd_program() -> str | None:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if os.access(found, os.X_OK) else None


class SshServer:
    """``/usr/sbin/sshd -D`` on 127.0.0.1:<free port>, key authentication only, everything in ``folder``."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.user = folder, free_port(), getpass.getuser()
        self.key = folder / "client_key"
        for key in (folder / "host_key", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = folder / "authorized_keys"
        authorized.write_text((folder / "client_key.pub").read_text())
        authorized.chmod(0o600)
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {self.port}",
                    f"HostKey {folder / 'host_key'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {folder / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    f"PermitRootLogin {'yes' if os.geteuid() == 0 else 'no'}",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.log = folder / "sshd.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sshd_program(), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + SSHD_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd ended at once:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen in {SSHD_START_S} s:\n{self.log.read_text()}")

    def command(self, remote: str) -> list[str]:
        """The ssh client command that runs ``remote`` on this server."""
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
            remote,
        ]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
