"""``rso-registration review`` without a browser: bad input ends in one line before anything is served,
and a session folder the command line wrote reopens in the review page's controller as it stands."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip(
    "trame_slicer", reason="the review app needs the 'review' extra (pip install -e '.[review]')"
)

from review_browser import free_port  # noqa: E402

CHANNELS, GRID = (4, 8, 16, 32, 64), (16, 32, 32)


def review_command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rso.cli", "review", "--port", str(free_port()), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", ["missing", "not an image", "session and images", "one views file"])
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
            ["--fixed", str(fixed), "--moving", str(fixed), "--fixed-views", str(views_file(tmp_path))],
            "of both images, or of neither",
        ),
    }[case]
    done = review_command(*arguments)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rso-registration: error: ") and expected in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Review page" not in done.stdout  # refused before serving


def views_file(folder, offset_deg: float = 0.0):
    """A phase bin's projection views (rso.core.reprojection): 25 directions over 180 degrees."""
    import json

    path = folder / f"views_{offset_deg:g}.json"
    path.write_text(
        json.dumps(
            {"geometry": "parallel-axial", "directions_deg": [offset_deg + 7.2 * k for k in range(25)]}
        )
    )
    return path


def test_a_session_the_command_line_wrote_reopens_in_the_review_controller(known_pair, tmp_path):
    from RSORegistrationLib.backends import InProcessBackend
    from RSORegistrationReview.controller import ReviewController, ReviewOptions
    from rso.core.imageio import write_image
    from rso.core.workflow import EngineSettings, RegisterJob, run_register_job
    from rso.core.session import RSOSettings
    from trame_slicer.core import SlicerApp

    fixed, moving, truth = known_pair
    job = RegisterJob(
        fixed=write_image(fixed, tmp_path / "fixed.nii.gz"),
        moving=write_image(moving, tmp_path / "m.nii.gz"),
        out=str(tmp_path / "out"),
        engine=EngineSettings(channels=CHANNELS, grid=GRID, device="cpu"),
        iso=2,
        boxes_ras=[[-40.0, 150.0, -680.0, 20.0, 210.0, -630.0]],
        rso=RSOSettings(iterations=2),
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
