"""The review page's controller without a browser, with the real worker process: another pair opens
in place of the first, an engine process that dies is reported in one line and reopened, and the
projection views given for the pair make ISO compare artefact-matched images."""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip(
    "trame_slicer", reason="the review app needs the 'review' extra (pip install -e '.[review]')"
)

from review_browser import wait_until  # noqa: E402

PARAMETERS = {"modelChannels": "4,8,16,32,64", "gridShape": "16,32,32", "device": "cpu", "isoIterations": 2}
STEP_S = 120.0


def started(known_pair, tmp_path, **views):
    """A controller on the known pair with the real worker process, started."""
    from trame_slicer.core import SlicerApp

    from rso.core.imageio import write_image
    from RSORegistrationReview.controller import ReviewController, ReviewOptions

    fixed, moving, _ = known_pair
    options = ReviewOptions(
        fixed=str(write_image(fixed, tmp_path / "fixed.nii.gz")),
        moving=str(write_image(moving, tmp_path / "moving.nii.gz")),
        session=str(tmp_path / "session"),
        parameters=PARAMETERS,
        engine={"precision": "fp32"},
        **views,
    )
    controller = ReviewController(SlicerApp(), options, cache_dir=tmp_path / "cache")
    controller.start()
    return controller


@pytest.fixture
def controller(known_pair, tmp_path):
    controller = started(known_pair, tmp_path)
    yield controller
    controller.close()


def finish(controller) -> dict:
    """Let the controller handle the engine's messages until it is idle; what the page would show then."""
    wait_until(lambda: not controller.process(), STEP_S, "the end of the step", interval=0.05)
    return controller.page_state()


def test_an_engine_that_dies_is_one_line_and_reopens_at_the_last_step(controller):
    controller.run_action(controller.register)
    assert finish(controller)["steps"] == ["general"]
    controller.run_action(controller.refine)
    wait_until(
        lambda: controller.process() and controller.progress > 0, STEP_S, "ISO under way", interval=0.05
    )
    os.kill(controller.logic.backend.pid, signal.SIGKILL)  # as an out-of-memory kill would
    shown = finish(controller)
    assert "engine process stopped" in shown["error_line"] and "Reopen" in shown["error_line"]
    assert "\n" not in shown["error_line"] and shown["can_reopen"] and not shown["can_step"]
    controller.run_action(controller.reopen)
    shown = finish(controller)
    assert (
        shown["steps"] == ["general"] and shown["can_step"] and not shown["error_line"]
    )  # the ISO never happened
    controller.run_action(controller.refine)
    assert finish(controller)["steps"] == ["general", "ISO"]


def test_another_pair_replaces_the_first_and_a_bad_one_changes_nothing(controller, tmp_path):
    scene = controller.scene
    controller.run_action(controller.register)
    finish(controller)
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    first = controller.page_state()
    (tmp_path / "broken.nrrd").write_text("NRRD0004\nbroken\n")
    controller.run_action(controller.open_pair, str(tmp_path / "broken.nrrd"), first["inputs"]["moving"])
    assert "could not be read" in controller.error
    assert controller.page_state()["steps"] == ["general"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes  # nothing added or lost
    controller.run_action(
        controller.open_pair, first["inputs"]["moving"], first["inputs"]["fixed"]
    )  # swapped
    shown = controller.page_state()
    assert not shown["error_line"] and shown["steps"] == [] and shown["session_folder"] == ""
    assert shown["inputs"]["fixed"] == first["inputs"]["moving"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3  # fixed, moving, moving as acquired
    controller.run_action(controller.register)
    shown = finish(controller)
    assert shown["steps"] == ["general"] and shown["session_folder"].startswith(str(tmp_path / "cache"))


def test_the_pairs_projection_views_make_iso_compare_matched_images_and_a_page_pair_has_none(
    known_pair, tmp_path
):
    from test_review_cli import views_file

    controller = started(
        known_pair,
        tmp_path,
        fixed_geometry=str(views_file(tmp_path)),
        moving_geometry=str(views_file(tmp_path, 2.16)),
    )
    try:
        controller.run_action(controller.register)
        finish(controller)
        controller.run_action(controller.refine)
        assert finish(controller)["steps"] == ["general", "ISO"]
        assert controller.logic.history[-1]["params"]["artefacts_matched"] is True
        shown = controller.page_state()
        controller.run_action(controller.open_pair, shown["inputs"]["moving"], shown["inputs"]["fixed"])
        params = controller.logic.parameters()
        assert (
            params.fixedGeometryFile == params.movingGeometryFile == ""
        )  # those views belong to the first pair
    finally:
        controller.close()
