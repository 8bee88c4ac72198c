"""The review page's access checks (RSORegistrationReview.access) on a real trame server: without the
run's token the page, its files and the websocket upgrade get 403; the token in the address opens
the page and its cookie the rest; on a Unix socket (0600) the TCP port is closed.

The server is bare_page.py (the same checks, no Slicer), so these run in seconds; the browser test
checks the real review page the same way.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("trame", reason="the review app needs the 'review' extra (pip install -e '.[review]')")

import aiohttp  # noqa: E402
from review_browser import WEBSOCKET_UPGRADE, http_status, unix_status, wait_until  # noqa: E402

from rso.errors import InputError  # noqa: E402
from RSORegistrationReview.access import UnixSocket, checked_token, cookie_name  # noqa: E402

BARE_PAGE = Path(__file__).with_name("bare_page.py")


class BarePage:
    def __init__(self, folder: Path, socket_path: Path | None = None):
        self.token = secrets.token_urlsafe(32)
        self.log = folder / f"bare-{secrets.token_hex(3)}.log"
        arguments = [sys.executable, str(BARE_PAGE), self.token, *([str(socket_path)] if socket_path else [])]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        self.port = int(wait_until(self._ready, 60, "the bare page").group(1))
        self.base = f"http://127.0.0.1:{self.port}/"

    def _ready(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"the bare page exited: {self.log.read_text()}")
        return re.search(r"ready (\d+)", self.log.read_text())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    served = BarePage(tmp_path_factory.mktemp("bare"))
    yield served
    served.stop()


def a_script(page: BarePage) -> str:
    """The path of one of the page's own scripts, from its index.html (fetched with the token)."""
    with urllib.request.urlopen(f"{page.base}index.html?token={page.token}", timeout=10) as reply:
        return re.search(r'src="\.?/?([^"]+\.js)"', reply.read().decode()).group(1)


def test_without_the_token_every_request_is_refused(page):
    script = a_script(page)
    for path in ("", "index.html", script, "no-such-file", f"index.html?token={page.token[:-1]}x"):
        assert http_status(page.base + path) == 403, path
    assert http_status(page.base + "index.html", headers={"Authorization": "token wrong"}) == 403
    refused = urllib.request.build_opener()
    with pytest.raises(urllib.error.HTTPError) as answer:
        refused.open(urllib.request.Request(page.base + "index.html"), timeout=10)
    assert "needs its token" in answer.value.read().decode()


def test_the_token_opens_the_page_and_its_cookie_the_rest(page):
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    assert (
        http_status(f"{page.base}?token={page.token}", opener=browser) == 200
    )  # "/" redirects to index.html
    cookies = {cookie.name: cookie for cookie in jar}
    cookie = cookies[cookie_name(page.token)]
    assert cookie.value == page.token and cookie.has_nonstandard_attr("HttpOnly")
    assert (
        http_status(page.base + a_script(page), opener=browser) == 200
    )  # the page's own requests carry the cookie
    assert http_status(page.base + "index.html", headers={"Authorization": f"token {page.token}"}) == 200


def websocket_status(url: str, headers: dict | None = None, unix_path: Path | None = None) -> int:
    """The answer to a websocket upgrade of ``url`` (through a Unix socket if given): 101 if accepted."""

    async def upgrade() -> int:
        connector = aiohttp.UnixConnector(path=str(unix_path)) if unix_path else None
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                async with session.ws_connect(
                    url, headers=headers or {}, timeout=aiohttp.ClientWSTimeout(10)
                ):
                    return 101
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status

    return asyncio.run(upgrade())


def test_the_websocket_needs_the_token(page):
    ws = f"ws://127.0.0.1:{page.port}/ws"
    assert websocket_status(ws) == 403
    assert websocket_status(ws, {"Cookie": f"{cookie_name(page.token)}=wrong"}) == 403
    assert http_status(page.base + "ws", headers=WEBSOCKET_UPGRADE) == 403  # a plain HTTP upgrade request
    assert websocket_status(f"{ws}?token={page.token}") == 101
    assert websocket_status(ws, {"Cookie": f"{cookie_name(page.token)}={page.token}"}) == 101


def test_on_a_unix_socket_only_its_owner_connects_and_tcp_is_closed(tmp_path):
    path = tmp_path / "review.sock"
    served = BarePage(tmp_path, path)
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode) and stat.S_IMODE(path.lstat().st_mode) == 0o600
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", served.port), timeout=3).close()

        assert unix_status(path, "index.html") == 403
        assert unix_status(path, f"index.html?token={served.token}") == 200
        assert websocket_status("ws://review/ws", unix_path=path) == 403
    finally:
        served.stop()
    assert not path.exists()  # removed when the server stops


def test_a_unix_socket_path_in_use_or_taken_is_refused_and_a_stale_one_replaced(tmp_path):
    (tmp_path / "file").write_text("not a socket")
    with pytest.raises(InputError, match="exists and is not a socket"):
        UnixSocket(tmp_path / "file")
    with pytest.raises(InputError, match="is not a folder"):
        UnixSocket(tmp_path / "absent" / "s.sock")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "busy.sock"))
    listening.listen()
    with pytest.raises(InputError, match="in use by another server"):
        UnixSocket(tmp_path / "busy.sock")
    listening.close()  # now stale: the file is left, nobody listens
    replaced = UnixSocket(tmp_path / "busy.sock")
    assert stat.S_IMODE(os.lstat(tmp_path / "busy.sock").st_mode) == 0o600
    replaced.close()
    assert not (tmp_path / "busy.sock").exists()


def test_a_token_given_must_be_long_and_url_safe():
    assert len(checked_token(None)) >= 43 and checked_token(None) != checked_token(None)
    assert checked_token("A-b_c.d~" * 2) == "A-b_c.d~" * 2
    for bad in ("short", "x" * 15, "has space in it 123", "slash/slash/slash/x", "é" * 20):
        with pytest.raises(InputError, match="16 or more characters"):
            checked_token(bad)
