"""An offscreen slice-view render of a real MRML scene after a registration (EGL, no display).

The render runs in a child process (the README screenshot script itself): an OpenGL failure
there cannot take pytest down. The overlay must colour pixels inside the ROI, and must leave
every pixel grey where the fixed and warped images agree. The det J quality map as the
foreground must colour where the field compresses or stretches, and nothing where it keeps volume.
The bundled general model gives the field enough structure for both in two ISO iterations.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest_slicer import REPO, egl_environment


def coloured(rgb: np.ndarray, tolerance: int = 3) -> np.ndarray:
    rgb = rgb.astype(int)
    return (np.abs(rgb[..., 0] - rgb[..., 1]) > tolerance) | (np.abs(rgb[..., 1] - rgb[..., 2]) > tolerance)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("render")
    command = [
        sys.executable,
        str(REPO / "scripts" / "render_screenshot.py"),
        "--out",
        str(folder / "shot.png"),
        "--evidence",
        str(folder / "evidence.npz"),
        "--size",
        "400",
        "320",
        "--shape",
        "32",
        "64",
        "64",
        "--spacing",
        "3",
        "--grid",
        "32,64,64",
        "--model",
        str(REPO / "RSORegistration" / "rso" / "resources" / "general_model.pt"),
        "--iso",
        "2",
        "--rso",
        "2",
        "--rso-mode",
        "direct",
    ]  # a weak step on purpose: some difference stays in the ROI to be drawn
    done = subprocess.run(command, env=egl_environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, dict(np.load(folder / "evidence.npz"))


def test_the_png_is_written(rendered):
    folder, evidence = rendered
    from PIL import Image

    with Image.open(folder / "shot.png") as image:
        assert image.size == (400, 320)
        pixels = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(pixels, evidence["shot"])
    assert pixels.std() > 20  # an image, not a blank window


def test_overlay_appears_inside_the_roi(rendered):
    _, evidence = rendered
    left, top, right, bottom = np.round(evidence["roi_pixels"]).astype(int)
    assert 0 < left < right < 400 and 0 < top < bottom < 320
    inside = coloured(evidence["overlay"])[top + 2 : bottom - 1, left + 2 : right - 1]
    assert inside.mean() > 0.05, "no difference overlay inside the ROI"


def test_no_overlay_where_fixed_and_warped_agree(rendered):
    _, evidence = rendered
    near = evidence["difference_near_pixel"]
    agree = np.isfinite(near) & (near < evidence["neutral_hu"] / 2)
    at = evidence["difference_at_pixel"]
    disagree = np.isfinite(at) & (at > 2 * evidence["neutral_hu"])
    assert agree.mean() > 0.3 and disagree.any()  # both kinds of place are in view
    colour = coloured(evidence["overlay"])
    assert not colour[agree].any(), f"{colour[agree].sum()} coloured pixels where the images agree"
    assert colour[disagree].mean() > 0.8  # and the overlay does show the disagreement


def test_roi_box_is_drawn_on_its_edges(rendered):
    _, evidence = rendered
    left, top, right, bottom = np.round(evidence["roi_pixels"]).astype(int)
    shot, overlay = evidence["shot"].astype(int), evidence["overlay"].astype(int)
    drawn = np.abs(shot - overlay).sum(axis=-1) > 30  # what drawing the ROI changed
    for edge in (
        drawn[top - 2 : top + 3, left:right],
        drawn[bottom - 2 : bottom + 3, left:right],
        drawn[top:bottom, left - 2 : left + 3],
        drawn[top:bottom, right - 2 : right + 3],
    ):
        assert edge.any(axis=0 if edge.shape[0] < edge.shape[1] else 1).mean() > 0.8
    far = np.ones_like(drawn)
    far[max(top - 12, 0) : bottom + 12, max(left - 12, 0) : right + 12] = False
    far[:66, :260] = False  # the legend (four lines)
    far[-50:, :] = False  # the status line
    assert not drawn[far].any(), "the ROI is drawn away from where it is"


def test_the_jacobian_map_as_foreground_colours_only_where_volume_changes(rendered):
    _, evidence = rendered
    neutral = float(evidence["jacobian_neutral"])  # |det J - 1| that the colour table leaves black
    colour = coloured(evidence["jacobian_overlay"])
    near, at = evidence["jacobian_deviation_near_pixel"], evidence["jacobian_deviation_at_pixel"]
    kept = np.isfinite(near) & (near < neutral / 2)
    changed = np.isfinite(at) & (at > 1.5 * neutral)
    assert kept.mean() > 0.05 and changed.sum() > 500  # both kinds of place are in view
    assert not colour[kept].any(), f"{colour[kept].sum()} coloured pixels where det J is 1"
    assert colour[changed].mean() > 0.8
    assert not np.array_equal(
        evidence["jacobian_overlay"], evidence["overlay"]
    )  # another map than the difference
