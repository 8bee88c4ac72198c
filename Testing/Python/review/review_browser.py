"""A real review server and a real headless Chromium for the review tests (Playwright's Python API).

The server is ``python -m rso.cli review`` in a child process on a free loopback port, reached at the
address it prints (with its token); the browser is Debian's chromium (``make chromium`` installs
it). The slice views are images the server streams (JPEG frames over the websocket), so the tests
read pixels from screenshots, never the DOM alone: a view is found by the hidden marker its gutter
carries, and waited for until its frame is still.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("RSO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWS = ("Red", "Green", "Yellow")  # axial, coronal, sagittal
SERVER_START_S = 90.0
STOP_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition`` until it returns something true (returned); TimeoutError after ``timeout`` s."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = condition()
        if isinstance(last, np.ndarray) or last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"no {what} within {timeout:.0f} s (last: {last!r})")


PRINTED_ADDRESS = re.compile(r"Review page: (http://127\.0\.0\.1:(\d+)/\?token=([\w.~-]+))")


@dataclass
class ReviewServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    url: str = ""  # the address the server printed, with its token ("" until it did)
    token: str = ""

    @property
    def base(self) -> str:
        """The address without the token."""
        return f"http://127.0.0.1:{self.port}/"

    def printed_address(self) -> bool:
        """Read the address (and token) the server printed once it listens; False until then."""
        found = PRINTED_ADDRESS.search(self.log_path.read_text(errors="replace"))
        if found:
            assert int(found.group(2)) == self.port, found.group(0)
            self.url, self.token = found.group(1), found.group(3)
        return bool(found)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(line for line in text.splitlines() if "WindowResizeEvent" not in line)[
            -lines * 200 :
        ]

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}index.html?token={self.token}", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> int | None:
        """SIGINT (the server shuts its worker down), then SIGKILL if it lingers; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_S)
        return self.process.returncode


WEBSOCKET_UPGRADE = {  # as a browser asks for the page's websocket
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def http_status(url: str, headers: dict | None = None, opener=None) -> int:
    """The HTTP status of a GET of ``url`` (redirects followed; through ``opener`` if given)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as refused:
        return refused.code


def unix_status(path, address: str, headers: dict | None = None) -> int:
    """The HTTP status of a GET of ``address`` (e.g. "index.html?token=...") through a Unix socket."""
    import asyncio

    import aiohttp

    async def get() -> int:
        connector = aiohttp.UnixConnector(path=str(path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://review/{address}", headers=headers or {}) as reply,
        ):
            return reply.status

    return asyncio.run(get())


def start_review_server(arguments: list[str], folder: Path) -> ReviewServer:
    """``rso-registration review ARGS --port <free>``, its home and log in ``folder``; returns once it
    answers."""
    port = free_port()
    home = (
        folder / "home"
    )  # the logic's cache (staged inputs) goes under $HOME/.cache: keep it in the test's folder
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow",
    }
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rso.cli", "review", *arguments, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
    server = ReviewServer(process, port, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the review server exited with {process.returncode}:\n{server.log_tail()}")
        return server.printed_address() and server.answers()

    try:
        wait_until(ready, SERVER_START_S, "answer from the review server", interval=0.2)
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------------- the page
def view_image(page, view: str):
    """The <img> the view's frames are drawn into, found through the marker in the view's gutter."""
    cell = page.locator(".layout-grid-item", has=page.locator(f"#view-marker-{view}"))
    return cell.locator("img.image-display-area")


def grab(page, view: str) -> np.ndarray:
    """The view as the user sees it: an (rows, columns, 3) int16 array of its on-screen pixels."""
    from PIL import Image

    png = view_image(page, view).screenshot(timeout=10000)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def shows_an_image(pixels: np.ndarray) -> bool:
    """A rendered slice has structure; an empty view before its first frame is blank."""
    return pixels.size > 0 and float(pixels.std()) > 10.0 and float(pixels.mean()) > 5.0


def still_view(page, view: str = "Red", timeout: float = 20.0, settle_s: float = 0.6) -> np.ndarray:
    """The view once its frame stopped changing: the server sends a lower-quality frame first and the
    final one when nothing changed for a few frame periods, so equal grabs ``settle_s`` apart are final."""
    state = {"last": None}

    def settled():
        pixels = grab(page, view)
        same = (
            state["last"] is not None
            and pixels.shape == state["last"].shape
            and np.array_equal(pixels, state["last"])
        )
        state["last"] = pixels
        return pixels if same else None

    return wait_until(settled, timeout, f"still frame in view {view}", interval=settle_s)


def page_value(page, name: str):
    """A value of the page's state, as the page itself holds it (what its widgets show)."""
    return page.evaluate(f"window.trame.state.get({name!r})")


def text(page, selector: str) -> str:
    locator = page.locator(selector)
    return locator.inner_text(timeout=5000) if locator.count() else ""


def css_point(box: dict, fraction_x: float, fraction_y: float) -> tuple[int, int]:
    """A whole CSS pixel inside an element's box (whole pixels: the server sees the same point)."""
    return round(box["x"] + fraction_x * box["width"]), round(box["y"] + fraction_y * box["height"])


def hover_then(page, x: float, y: float, action) -> None:
    """Approach a point, rest on it (the view picks the handle under the mouse on move), then act."""
    page.mouse.move(x - 12, y - 12)
    page.mouse.move(x, y, steps=6)
    time.sleep(0.5)
    action()


def rectangle_mask(shape, corners: tuple[float, float, float, float], grow: float = 0.0) -> np.ndarray:
    """Pixels of an image (rows, columns) inside an axis-aligned rectangle (x1, y1, x2, y2), grown by
    ``grow``."""
    x1, y1, x2, y2 = corners
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (
        (columns >= min(x1, x2) - grow)
        & (columns <= max(x1, x2) + grow)
        & (rows >= min(y1, y2) - grow)
        & (rows <= max(y1, y2) + grow)
    )


def outline_mask(shape, corners, band: float) -> np.ndarray:
    """Pixels within ``band`` of a rectangle's outline, centre included: where a box and its handles are
    drawn."""
    x1, y1, x2, y2 = corners
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    centre = rectangle_mask(shape, (centre_x, centre_y, centre_x, centre_y), band)
    return (rectangle_mask(shape, corners, band) & ~rectangle_mask(shape, corners, -band)) | centre


# ------------------------------------------------------------------- browser, page and network
def chromium_or_skip() -> str:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    reason = f"{CHROMIUM} is absent: `make chromium` installs Debian's chromium (as root)"
    if os.environ.get("RSO_REQUIRE_BROWSER") == "1":  # CI (.ci/run): the browser tests must run
        pytest.fail(reason)
    pytest.skip(reason)


# Every value the progress bar and its label show, as the page draws them (no polling gaps).
RECORD_PROGRESS = """() => {
    const bar = document.querySelector('#progress'), label = document.querySelector('#progress-label');
    window.progressShown = {values: [], labels: []};
    new MutationObserver(() => window.progressShown.values.push(bar.getAttribute('aria-valuenow')))
        .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
    new MutationObserver(() => window.progressShown.labels.push(label.textContent))
        .observe(label, {childList: true, characterData: true, subtree: true});
}"""


def rest_mouse(page) -> None:
    """Away from the views, so that no handle is highlighted in the pixels compared."""
    page.mouse.move(700, 20)


def coloured(pixels: np.ndarray) -> np.ndarray:
    """Where the difference overlay colours the grey image."""
    return (np.abs(pixels[..., 0] - pixels[..., 2]) > 40) | (np.abs(pixels[..., 1] - pixels[..., 2]) > 40)


# A websocket to the review server, opened by a page: "open", or "refused" when the upgrade is refused.
OPEN_WEBSOCKET = """(url) => new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.onopen = () => { socket.close(); resolve('open'); };
    socket.onerror = () => resolve('refused');
})"""


def outward_address() -> str | None:
    """The address this machine would use towards other machines (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address
