"""``rso-registration review`` without a browser: bad input ends in one line before anything is served;
the served page refuses every request without the run's token, on TCP and on a Unix socket; and a
session folder the command line wrote reopens in the review page's controller as it stands."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

pytest.importorskip(
    "trame_slicer", reason="the review app needs the 'review' extra (pip install -e '.[review]')"
)

from review_browser import (  # noqa: E402
    WEBSOCKET_UPGRADE,
    free_port,
    http_status,
    start_review_server,
    unix_status,
)

CHANNELS, GRID = (4, 8, 16, 32, 64), (16, 32, 32)


def review_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rso.cli", "review", "--port", str(free_port()), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_INPUTS = [
    "missing",
    "not an image",
    "session and images",
    "one views file",
    "short token",
    "allowed folder missing",
    "socket path taken",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_nothing_is_served(case, known_pair, tmp_path):
    from rso.core.imageio import write_image

    fixed = write_image(known_pair[0], tmp_path / "fixed.nii.gz")
    (tmp_path / "text.nii.gz").write_text("not an image\n")
    (tmp_path / "session").mkdir()
    (tmp_path / "session" / "session.json").write_text("{}")
    arguments, expected = {
        "missing": (
            ["--fixed", str(fixed), "--moving", str(tmp_path / "absent.nii.gz")],
            "moving image not found",
        ),
        "not an image": (
            ["--fixed", str(tmp_path / "text.nii.gz"), "--moving", str(fixed)],
            "could not be read",
        ),
        "session and images": (
            ["--session", str(tmp_path / "session"), "--fixed", str(fixed)],
            "holds a session",
        ),
        "one views file": (
            ["--fixed", str(fixed), "--moving", str(fixed), "--fixed-geometry", str(views_file(tmp_path))],
            "of both images, or of neither",
        ),
        "short token": (["--fixed", str(fixed), "--moving", str(fixed), "--token", "abc"], "16 or more"),
        "allowed folder missing": (
            ["--fixed", str(fixed), "--moving", str(fixed), "--allow-dir", str(tmp_path / "absent")],
            "is not a folder (--allow-dir)",
        ),
        "socket path taken": (
            ["--fixed", str(fixed), "--moving", str(fixed), "--unix-socket", str(tmp_path / "text.nii.gz")],
            "exists and is not a socket",
        ),
    }[case]
    done = review_command(*arguments)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rso-registration: error: ") and expected in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Review page" not in done.stdout  # refused before serving


def served_arguments(known_pair, folder) -> list[str]:
    from rso.core.imageio import write_image

    fixed = write_image(known_pair[0], folder / "fixed.nii.gz")
    moving = write_image(known_pair[1], folder / "moving.nii.gz")
    grid = ["--grid", ",".join(map(str, GRID)), "--channels", ",".join(map(str, CHANNELS))]
    return ["--fixed", str(fixed), "--moving", str(moving), *grid, "--device", "cpu"]


def test_the_served_page_needs_the_printed_token(known_pair, tmp_path):
    """The page, its files and the websocket upgrade without the token: 403; the printed address: 200."""
    server = start_review_server(served_arguments(known_pair, tmp_path), tmp_path)
    try:
        assert len(server.token) >= 43  # a new one, secrets.token_urlsafe(32)
        for path in ("", "index.html", "ws"):
            assert http_status(server.base + path) == 403, path
        assert http_status(server.base + "ws", WEBSOCKET_UPGRADE) == 403
        assert http_status(f"{server.base}index.html?token={server.token[::-1]}") == 403
        assert http_status(server.url) == 200
    finally:
        server.stop()


def test_the_page_on_a_unix_socket_is_its_owners_only(known_pair, tmp_path):
    """Served on a 0600 socket, announced with the tunnel to it; the token is still needed there."""
    path, token = tmp_path / "review.sock", "a-token-of-the-right-length"
    command = [sys.executable, "-m", "rso.cli", "review", *served_arguments(known_pair, tmp_path)]
    server = subprocess.Popen(
        [*command, "--unix-socket", str(path), "--port", "8090"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RSO_REVIEW_TOKEN": token},  # out of sight of ps
    )
    try:
        line = ""
        while "Review page" not in line:
            line = server.stdout.readline()  # the server prints its address once it is on the socket
            assert line, "the server ended without printing its address"
        assert f"ssh -N -L 8090:{path} <this host>, then open http://127.0.0.1:8090/?token={token}" in line
        assert stat.S_ISSOCK(path.lstat().st_mode) and stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert unix_status(path, "index.html") == 403
        assert unix_status(path, "index.html", WEBSOCKET_UPGRADE) == 403
        assert unix_status(path, f"index.html?token={token}") == 200
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    assert not path.exists()  # removed with the server


def views_file(folder, offset_deg: float = 0.0):
    """A phase bin's parallel-beam projection geometry (RTK XML): 25 directions over 180 degrees."""
    from rso.core.projection.geometry import ProjectionGeometry, write_geometry

    geometry = ProjectionGeometry.circular(1000.0, 0.0, [offset_deg + 7.2 * k for k in range(25)])
    return write_geometry(geometry, folder / f"geometry_{offset_deg:g}.xml")


def test_a_session_the_command_line_wrote_reopens_in_the_review_controller(known_pair, tmp_path):
    from trame_slicer.core import SlicerApp

    from rso.core.imageio import write_image
    from rso.core.workflow import RegisterJob, run_register_job
    from rso.settings import EngineSettings, ISOSettings, PairInputs, RSOSettings
    from RSORegistrationLib.backends import InProcessBackend
    from RSORegistrationReview.controller import ReviewController, ReviewOptions

    fixed, moving, truth = known_pair
    job = RegisterJob(
        inputs=PairInputs(
            fixed=str(write_image(fixed, tmp_path / "fixed.nii.gz")),
            moving=str(write_image(moving, tmp_path / "m.nii.gz")),
        ),
        out=str(tmp_path / "out"),
        engine=EngineSettings(channels=CHANNELS, grid=GRID, device="cpu"),
        iso=ISOSettings(iterations=2),
        boxes_ras=[[-40.0, 150.0, -680.0, 20.0, 210.0, -630.0]],
        rso=RSOSettings(iterations=2, max_disagreement_mm=0.0),  # kept: two iterations are no opinion
        figure=False,
    )
    run_register_job(job)  # what `rso-registration register --out out` does

    slicer_app = SlicerApp()
    with pytest.raises(Exception, match="holds a session"):
        ReviewController(
            slicer_app,
            ReviewOptions(session=str(tmp_path / "out" / "session"), fixed="f.nii.gz"),
            InProcessBackend,
            cache_dir=tmp_path / "cache",
        ).start()
    controller = ReviewController(
        slicer_app,
        ReviewOptions(session=str(tmp_path / "out" / "session")),
        InProcessBackend,
        cache_dir=tmp_path / "cache",
    )
    try:
        controller.start()
        controller.logic.wait(timeout=120)
        shown = controller.page_state()
        assert shown["steps"] == ["general", "ISO", "RSO 1"] and shown["can_undo"]
        assert [row["step"] for row in shown["metrics_rows"]] == ["general", "ISO", "RSO 1"]
        assert shown["inputs"]["fixed"].endswith("fixed.nii.gz") and "<svg" in shown["loss_svg"]
        assert controller.logic.parameters().differenceVolume is not None  # its results are in the scene
        controller.run_action(controller.undo)  # the review goes on where the command line stopped
        controller.logic.wait(timeout=120)
        assert controller.page_state()["steps"] == ["general", "ISO"] and not controller.error
    finally:
        controller.close()
