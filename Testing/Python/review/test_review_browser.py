"""The review page as a user meets it: a real review server on a small real-CT pair with a known
truth, driven in a real headless Chromium (Debian's chromium through Playwright).

The tests run in order on one page, as one review: the page opens at the address the server
printed, with its token, and another browser without it gets 403, page and websocket alike; the
views show the images; Register then Refine run with a moving progress bar; a box drawn in the
axial view starts RSO; dragging it starts RSO again, which changes the overlay inside the box and
leaves every pixel outside it as it was; Undo brings the previous overlay back exactly; a bad file
gives one error line and changes nothing; the Files menu lists and opens only the allowed folders
(the images'), refusing a path that leaves them through ``..`` or a symlink; nothing is fetched
from outside the machine; the session folder reopens in the Slicer module's logic. Pixels come
from screenshots of the views, never from the DOM alone.

The views arrive as JPEG frames: a change inside the box can alter the pixels of the 16-pixel
blocks it touches (and, through the decoder's chroma smoothing, a pixel or two beyond), so
"outside" and "unchanged" are checked beyond those blocks.

Set RSO_REVIEW_SCREENSHOT=docs/figures/review-app.png to write the README's screenshot of the page.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time

import numpy as np
import pytest

pytest.importorskip(
    "trame_slicer", reason="the review app needs the 'review' extra (pip install -e '.[review]')"
)
pytest.importorskip("playwright", reason="the browser tests need playwright (the 'test' extra)")

from review_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OPEN_WEBSOCKET,
    RECORD_PROGRESS,
    VIEWS,
    WEBSOCKET_UPGRADE,
    chromium_or_skip,
    coloured,
    css_point,
    grab,
    hover_then,
    http_status,
    outline_mask,  # noqa: E402
    outward_address,
    page_value,
    rectangle_mask,
    rest_mouse,
    shows_an_image,
    start_review_server,
    still_view,
    text,
    view_image,
    wait_until,
)

from rso.options import DEFAULT_BLEND_MARGIN_MM  # noqa: E402

pytestmark = pytest.mark.browser

CHANNELS, GRID = "4,8,16,32,64", (16, 32, 32)  # a tiny untrained network on a small model grid
ISO_ITERATIONS, RSO_ITERATIONS = 20, 10  # ISO long enough for several progress messages (5 a second)
STEP_S = 120.0  # the longest any one step may take here (2 CPU cores, the browser on the same cores)
JPEG_REACH_PX = 24  # a 16-pixel block plus the decoder's chroma smoothing, rounded up
OUTLINE_BAND_PX = 24  # a box's outline and handles, plus the JPEG reach
FIRST_BOX = (0.30, 0.30, 0.55, 0.55)  # corners of the drawn box, as fractions of the axial view
DRAG_PX = (40, 30)  # the box is dragged by this much (CSS pixels)


@pytest.fixture(scope="module")
def pair_files(known_pair, tmp_path_factory):
    """The real-CT pair with its analytic truth (conftest.known_pair), as the files a user would give."""
    from rso.core.imageio import write_displacement_field, write_image

    fixed, moving, truth = known_pair
    folder = tmp_path_factory.mktemp("pair")
    return {
        "fixed": write_image(fixed, folder / "fixed.nii.gz"),
        "moving": write_image(moving, folder / "moving.nii.gz"),
        "truth": write_displacement_field(truth, folder / "truth.nii.gz"),
        "extent_mm": np.array(fixed.GetSize()) * np.array(fixed.GetSpacing()),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def server(pair_files, tmp_path_factory):
    chromium_or_skip()
    folder = tmp_path_factory.mktemp("review")
    arguments = [
        "--fixed",
        str(pair_files["fixed"]),
        "--moving",
        str(pair_files["moving"]),
        "--truth",
        str(pair_files["truth"]),
        "--session",
        str(folder / "session"),
        "--channels",
        CHANNELS,
        "--grid",
        ",".join(map(str, GRID)),
        "--device",
        "cpu",
        "--iso",
        str(ISO_ITERATIONS),
        "--rso",
        str(RSO_ITERATIONS),
    ]
    server = start_review_server(arguments, folder)
    server.session = folder / "session"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def review(server):
    """The page in headless Chromium, and what the tests saw on it (shared, in order)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30000)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15000)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("websocket", lambda socket: requests.append(socket.url))
        opened = page.goto(server.url, wait_until="domcontentloaded")  # the printed address, token and all
        assert opened.status == 200 and "token=" in server.url
        page.wait_for_selector("#view-marker-Red", state="attached", timeout=30000)
        yield {"page": page, "requests": requests, "server": server, "browser": browser}
        browser.close()


def wait_for_step(page, label: str, present: bool = True) -> None:
    def done():
        shown = label in (page_value(page, "steps") or [])
        error = text(page, "#error-line")
        assert not error, f"the page reports an error: {error}"
        return shown == present and not page_value(page, "busy")

    wait_until(done, STEP_S, f"step {label} {'done' if present else 'undone'}", interval=0.2)


def box_in_view(page, fractions) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) of a box drawn at these fractions of the axial view, in the view's own pixels."""
    box = view_image(page, "Red").bounding_box()
    (x1, y1), (x2, y2) = css_point(box, *fractions[:2]), css_point(box, *fractions[2:])
    return x1 - box["x"], y1 - box["y"], x2 - box["x"], y2 - box["y"]


def pixels_per_mm(page, corners) -> float:
    """The axial view's scale, from the box's size on screen and its size in mm the page lists."""
    size = re.search(r"(\d+) x (\d+) x (\d+) mm", page_value(page, "regions")[0])
    width_mm, height_mm = float(size.group(1)), float(size.group(2))  # R and A: the axial view's axes
    return min(abs(corners[2] - corners[0]) / width_mm, abs(corners[3] - corners[1]) / height_mm)


def test_the_page_shows_the_three_views(review):
    page = review["page"]
    views = wait_until(
        lambda: (
            [grab(page, view) for view in VIEWS]
            if all(shows_an_image(grab(page, view)) for view in VIEWS)
            else None
        ),
        60,
        "three rendered views",
        interval=0.25,
    )
    for view, pixels in zip(VIEWS, views):
        rows, columns, _ = pixels.shape
        assert rows > 200 and columns > 200, (view, pixels.shape)
        centre = pixels[rows // 4 : 3 * rows // 4, columns // 4 : 3 * columns // 4]
        assert centre.std() > 20, f"view {view} shows no anatomy"  # grey levels of the chest, not a flat fill
    assert text(page, "#btn-register") and page.locator("#btn-register").is_enabled()
    assert not page.locator("#btn-undo").is_enabled()  # nothing to undo yet


def test_without_the_token_the_page_and_its_websocket_are_refused(review):
    """Another user's browser (no token, no cookie) gets 403 for the page and for the websocket, while
    the page that came with the token opens one."""
    server, page = review["server"], review["page"]
    websocket = f"ws://127.0.0.1:{server.port}/ws"
    stranger = review["browser"].new_context()
    try:
        other = stranger.new_page()
        answer = other.goto(server.base, wait_until="domcontentloaded")
        assert answer.status == 403 and "needs its token" in other.content()
        assert other.locator("#view-marker-Red").count() == 0
        assert other.evaluate(OPEN_WEBSOCKET, websocket) == "refused"
    finally:
        stranger.close()
    assert page.evaluate(OPEN_WEBSOCKET, websocket) == "open"  # its cookie carries the token
    for path in ("", "index.html", "ws"):
        assert http_status(server.base + path) == 403, path
    assert http_status(server.base + "ws", WEBSOCKET_UPGRADE) == 403


def test_register_then_refine_moves_the_progress_bar(review):
    page = review["page"]
    page.click("#btn-register")
    wait_for_step(page, "general")
    assert "general model done" in text(page, "#status-line")
    assert page.locator("#metrics-table").inner_text().count("general") == 1
    page.evaluate(RECORD_PROGRESS)
    page.click("#btn-refine")
    wait_for_step(page, "ISO")
    values = [float(value) for value in page.evaluate("window.progressShown.values") if value is not None]
    labels = page.evaluate("window.progressShown.labels")
    moving = sorted({value for value in values if 0 < value < 100})
    assert len(moving) >= 2, f"the progress bar did not move: {values}"
    pattern = rf"ISO \d+/{ISO_ITERATIONS}: loss \d\.\d+, \d+ s left"
    assert any(re.search(pattern, label) for label in labels), labels
    table = page.locator("#metrics-table").inner_text()
    assert "RMSE (HU)" in table and "TRE (mm)" in table  # a truth was given: TRE is measured
    assert page.locator("#loss-plot svg").count() == 1 and "ISO" in page.locator("#loss-plot").inner_text()


def test_drawing_a_box_starts_rso(review):
    page = review["page"]
    box = view_image(page, "Red").bounding_box()
    page.click("#btn-draw")
    page.wait_for_selector("#placing-hint")
    first, second = css_point(box, *FIRST_BOX[:2]), css_point(box, *FIRST_BOX[2:])
    hover_then(page, *first, lambda: page.mouse.click(*first))
    page.mouse.move(*second, steps=10)
    time.sleep(0.3)
    page.mouse.click(*second)
    rest_mouse(page)
    wait_for_step(page, "RSO 1")
    assert "(refined)" in page_value(page, "regions")[0]
    assert "box TRE" in text(page, "#status-line") or "declined" in text(page, "#status-line")
    review["before_drag"] = still_view(page)


def test_dragging_the_box_refines_inside_it_and_nowhere_else(review, pair_files):
    page = review["page"]
    before = review["before_drag"]
    first = box_in_view(page, FIRST_BOX)
    box = view_image(page, "Red").bounding_box()
    centre = css_point(box, (FIRST_BOX[0] + FIRST_BOX[2]) / 2, (FIRST_BOX[1] + FIRST_BOX[3]) / 2)

    def drag():
        page.mouse.down()
        page.mouse.move(centre[0] + DRAG_PX[0], centre[1] + DRAG_PX[1], steps=15)
        time.sleep(0.3)
        page.mouse.up()

    hover_then(page, *centre, drag)
    rest_mouse(page)
    wait_for_step(page, "RSO 2")
    after = still_view(page)
    review["after_drag"] = after
    if os.environ.get("RSO_REVIEW_SCREENSHOT"):
        page.screenshot(path=os.environ["RSO_REVIEW_SCREENSHOT"])

    moved = (first[0] + DRAG_PX[0], first[1] + DRAG_PX[1], first[2] + DRAG_PX[0], first[3] + DRAG_PX[1])
    review["boxes"] = first, moved
    changed = np.abs(after - before).max(axis=2) > 0
    shape = changed.shape
    inside = rectangle_mask(shape, moved, -OUTLINE_BAND_PX) & ~outline_mask(shape, moved, OUTLINE_BAND_PX)
    assert changed[inside].mean() > 0.05, "the overlay inside the dragged box did not change"
    # Local composition changes the field only within the blend margin around the box; the coarse
    # field's linear upsampling and the view's interpolation reach about one model-grid cell each.
    grid_x, grid_y = GRID[2], GRID[1]
    cell_mm = float(max(pair_files["extent_mm"][0] / grid_x, pair_files["extent_mm"][1] / grid_y))
    reach_px = (DEFAULT_BLEND_MARGIN_MM + 2 * cell_mm) * pixels_per_mm(page, moved) + JPEG_REACH_PX
    outside = ~rectangle_mask(shape, moved, reach_px) & ~outline_mask(shape, first, OUTLINE_BAND_PX)
    assert (
        outside.mean() > 0.3 and coloured(before)[outside].sum() > 200
    )  # a real part of the view, with overlay
    assert not changed[outside].any(), f"{changed[outside].sum()} pixels changed outside the box"


def test_undo_restores_the_previous_overlay_exactly(review):
    page = review["page"]
    page.click("#btn-undo")
    wait_for_step(page, "RSO 2", present=False)
    restored = still_view(page)
    review["after_undo"] = restored
    first, moved = review["boxes"]
    shape = restored.shape[:2]
    boxes_drawn = outline_mask(shape, first, OUTLINE_BAND_PX) | outline_mask(shape, moved, OUTLINE_BAND_PX)
    review["boxes_drawn"] = boxes_drawn
    np.testing.assert_array_equal(restored[~boxes_drawn], review["before_drag"][~boxes_drawn])
    inside = rectangle_mask(shape, moved, -OUTLINE_BAND_PX) & ~boxes_drawn
    assert (
        np.abs(restored - review["after_drag"]).max(axis=2)[inside] > 0
    ).mean() > 0.05  # undo did something
    assert "(new)" in page_value(page, "regions")[0]  # its refinement is gone: the box is a new one again


def test_export_writes_the_results_where_the_page_says(review, pair_files):
    page = review["page"]
    folder = pair_files["folder"] / "exported"
    page.click("#btn-files")
    page.locator("#export-folder").fill(str(folder))
    page.click("#btn-files")
    page.click("#btn-export")
    wait_until(lambda: "exported to" in text(page, "#status-line"), STEP_S, "the export")
    assert {"warped.nii.gz", "displacement.nii.gz", "difference.nii.gz", "report.json"} <= {
        path.name for path in folder.iterdir()
    }
    assert page_value(page, "steps") == ["general", "ISO", "RSO 1"]  # exporting is not a step


def test_a_bad_file_shows_one_error_line_and_changes_nothing(review, pair_files):
    page = review["page"]
    bad = pair_files["folder"] / "not-an-image.nii.gz"
    bad.write_text("this is not an image\n")
    steps = page_value(page, "steps")
    page.click("#btn-files")
    page.locator("#input-fixed").fill(str(bad))
    page.click("#btn-open")
    error = wait_until(lambda: text(page, "#error-line"), 20, "the error line")
    assert "could not be read" in error and "not-an-image.nii.gz" in error and "\n" not in error.strip()
    assert page_value(page, "steps") == steps
    page.locator("#input-fixed").fill(str(pair_files["fixed"]))
    page.click("#btn-files")
    rest_mouse(page)
    np.testing.assert_array_equal(still_view(page), review["after_undo"])
    # The server still works: the views follow the layer and window buttons, and come back exactly.
    page.click("#layer-fixed")
    image_only = ~review["boxes_drawn"]  # the boxes are drawn in colour over any layer

    def fixed_alone():
        pixels = still_view(page)
        return pixels if not coloured(pixels)[image_only].any() else None

    alone = wait_until(fixed_alone, 20, "the fixed image alone, without the overlay")
    assert shows_an_image(alone)
    assert not text(page, "#error-line")  # the next action cleared the error
    page.click("#wl-lung")
    wait_until(lambda: np.abs(still_view(page) - alone).mean() > 5, 20, "the lung window")
    page.click("#wl-auto")
    page.click("#layer-difference")
    rest_mouse(page)
    wait_until(lambda: np.array_equal(still_view(page), review["after_undo"]), 20, "the overlay back")


def test_the_files_menu_opens_only_the_allowed_folders(review, pair_files, tmp_path_factory):
    """Default: the images' folder. The menu lists it (a symlink leading out left out) and fills the
    fields from it; a path typed that leaves it, by ``..`` or a symlink, is refused with one error line,
    and so is an export folder outside it."""
    page, folder = review["page"], pair_files["folder"].resolve()
    elsewhere = tmp_path_factory.mktemp("elsewhere").resolve()
    shutil.copy(pair_files["fixed"], elsewhere / "fixed.nii.gz")
    (folder / "leak.nii.gz").symlink_to(elsewhere / "fixed.nii.gz")
    steps = page_value(page, "steps")
    page.click("#btn-files")
    wait_until(lambda: page_value(page, "files_folder") == str(folder), 10, "the images' folder listed")
    names = wait_until(
        lambda: (
            [name.strip() for name in page.locator("#files-list .files-entry").all_inner_texts()]
            if "not-an-image.nii.gz" in page.locator("#files-list").inner_text()  # listed again on opening
            else None
        ),
        10,
        "the listing",
    )
    assert {"fixed.nii.gz", "moving.nii.gz", "truth.nii.gz", "exported/"} <= set(names), names
    assert "leak.nii.gz" not in names and page.locator("#files-up").is_disabled()  # the top
    page.click("#files-target-moving")
    page.locator("#files-list .files-entry", has_text="fixed.nii.gz").click()
    wait_until(
        lambda: page.locator("#input-moving").input_value() == str(folder / "fixed.nii.gz"), 10, "the pick"
    )
    page.locator("#input-moving").fill(str(pair_files["moving"]))
    for outside in (f"{folder}/../{elsewhere.name}/fixed.nii.gz", str(folder / "leak.nii.gz")):
        page.locator("#input-fixed").fill(outside)
        page.click("#btn-open")
        error = wait_until(
            lambda path=outside: path in text(page, "#error-line") and text(page, "#error-line"), 20, outside
        )
        assert "outside the folders this review may use" in error and "\n" not in error.strip()
    page.locator("#input-fixed").fill(str(pair_files["fixed"]))
    page.locator("#export-folder").fill(str(elsewhere / "export"))
    page.click("#btn-files")
    page.click("#btn-export")
    error = wait_until(
        lambda: "export folder" in text(page, "#error-line") and text(page, "#error-line"), 20, "export"
    )
    assert "outside the folders" in error
    assert not (elsewhere / "export").exists() and page_value(page, "steps") == steps
    rest_mouse(page)


def test_the_page_is_served_on_loopback_only_and_fetches_nothing_from_outside(review):
    port = review["server"].port
    local = (f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/", "blob:", "data:")
    outside = [url for url in review["requests"] if not url.startswith(local)]
    assert review["requests"] and not outside, outside
    address = outward_address()
    if address is not None:  # this machine's address on its network: nobody answers there
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=3).close()


def test_the_session_reopens_in_the_slicer_logic(review, tmp_path):
    """The folder the page kept is the one the module (and the CLI) use: Slicer's logic reopens it as it
    stands, once the page's engine has let it go (one writer per session folder)."""
    from rso.core.store import input_path
    from RSORegistrationLib.backends import InProcessBackend
    from RSORegistrationLib.headless import new_scene
    from RSORegistrationLib.logic import RegistrationLogic
    from RSORegistrationLib.volumes import read_volume

    page, folder = review["page"], review["server"].session
    shown_steps = page_value(page, "steps")
    review["server"].stop()  # the last test of this module: the page's worker releases the folder
    app = new_scene()
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path)
    params = logic.parameters()
    params.fixedVolume = read_volume(app.scene, input_path(folder, "fixed"), "fixed")
    params.movingVolume = read_volume(app.scene, input_path(folder, "moving"), "moving")
    logic.set_parameters(params)
    try:
        logic.reopen(folder)
        history = logic.wait(timeout=STEP_S)
    finally:
        logic.close()
    assert [record["kind"] for record in history] == ["general", "iso", "rso"]
    assert shown_steps == ["general", "ISO", "RSO 1"]
    assert logic.parameters().differenceVolume is not None
