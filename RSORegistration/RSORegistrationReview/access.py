"""Who may use the review page: the holder of a token made for this run, as Jupyter does it.

The page shows patient images and runs registrations, and 127.0.0.1 is open to every user of the
host, so every HTTP request, static file and websocket upgrade needs the token: in the address
(``/?token=...``, the address ``serve`` prints), in an ``Authorization: token ...`` header, or in
the cookie the first good request sets, so that the page's own requests (its scripts, the
websocket) pass. Anything else gets 403. The check is an aiohttp middleware added to wslink's
application when trame binds its server (``controller.on_server_bind``), before it starts.

``--unix-socket PATH`` serves the page on a Unix socket only its owner can connect to (0600), for
``ssh -L PORT:PATH``: wslink listens on TCP only, so the socket is bound (and chmod-ed, before it
listens) when the command starts, and once the server is up it joins wslink's aiohttp runner as a
second site and the TCP one (127.0.0.1, a free port, token-checked too) is stopped. The token is
still required: on the PC, the tunnel's end is a loopback port open to that machine's users.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from trame_server.utils.asynchronous import create_task

from rso.errors import InputError

log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_.~-]{16,}")  # URL-safe as is: it goes into the printed address
TOKEN_ENV = "RSO_REVIEW_TOKEN"  # the token, out of sight of `ps` (a --token argument is visible to all)
REFUSED = (
    "This review page needs its token: open the address `rso-registration review` printed "
    "(http://127.0.0.1:PORT/?token=...).\n"
)


@dataclass
class ReviewAccess:
    """Who may use the page and what it may open: ``token`` (default: a new one), ``allow_dirs`` (the
    folders the Files menu may use; empty: the folders of the images given), ``unix_socket`` (a path:
    served there instead of on TCP). ``serve`` fills ``socket`` and ``tunnel_port`` for a Unix socket."""

    token: str = field(default_factory=lambda: new_token())
    allow_dirs: list = field(default_factory=list)
    unix_socket: str | None = None
    socket: UnixSocket | None = field(default=None, repr=False)
    tunnel_port: int = 0


def new_token() -> str:
    """A token for one run: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def checked_token(token: str | None) -> str:
    """``token`` if it is a usable one (16+ URL-safe characters), a new one if None; else InputError."""
    if token is None:
        return new_token()
    if not TOKEN_PATTERN.fullmatch(token):
        raise InputError("a review token needs 16 or more characters among A-Z a-z 0-9 _ . ~ -")
    return token


def cookie_name(token: str) -> str:
    """A cookie per token: two review servers on one host (cookies ignore ports) keep their own."""
    return "rso-review-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def token_middleware(token: str):
    """An aiohttp middleware: 403 for a request without ``token``; the first good one sets the cookie."""
    cookie = cookie_name(token)

    @web.middleware
    async def require_token(request: web.Request, handler):
        in_address = _same(request.query.get("token"), token)
        header = request.headers.get("Authorization", "")
        if not (
            in_address
            or _same(request.cookies.get(cookie), token)
            or _same(header[len("token ") :] if header.startswith("token ") else None, token)
        ):
            log.warning("refused a request without the review token: %s %s", request.method, request.path)
            raise web.HTTPForbidden(text=REFUSED)
        try:
            response = await handler(request)
        except web.HTTPException as redirect:  # "/" answers with a redirect to index.html, raised
            _set_cookie(redirect, cookie, token, in_address)
            raise
        _set_cookie(response, cookie, token, in_address)
        return response

    return require_token


def _set_cookie(response, cookie: str, token: str, wanted: bool) -> None:
    if wanted and isinstance(response, web.StreamResponse) and not response.prepared:
        response.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/")


def protect(trame_server, access: ReviewAccess, announce: Callable[[], None]) -> None:
    """Every request to ``trame_server`` will need the token; with ``access.socket``, the page moves to
    the socket once the server is up. ``announce()`` is called when the page can be reached (it
    prints the address). Call before the server starts."""

    def on_bind(wslink_server) -> None:
        wslink_server.app.middlewares.append(token_middleware(access.token))

    trame_server.controller.on_server_bind.add(on_bind)
    if access.socket is None:
        trame_server.controller.on_server_ready.add(lambda **_: announce())
    else:
        access.socket.attach(trame_server, announce)


class UnixSocket:
    """A Unix socket at ``path`` that only this user can connect to, for the page (see the docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()
        _free(self.path)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket.bind(str(self.path))
            # Nobody can connect before listen(), which comes later: the mode is set before anyone can.
            os.chmod(self.path, 0o600)
        except OSError as exc:
            self.socket.close()
            raise InputError(f"cannot make the Unix socket {self.path}: {exc.strerror or exc}") from None
        self._inode = self.path.stat().st_ino
        self._wslink_server = None

    def attach(self, trame_server, announce: Callable[[], None]) -> None:
        """Serve ``trame_server``'s page on the socket once it is up, stop its TCP site, then
        ``announce()``."""

        def on_bind(wslink_server) -> None:
            self._wslink_server = wslink_server

        trame_server.controller.on_server_bind.add(on_bind)
        trame_server.controller.on_server_ready.add(lambda **_: create_task(self._take_over(announce)))

    async def _take_over(self, announce: Callable[[], None]) -> None:
        """Add the socket to wslink's aiohttp runner as a site and stop the TCP one."""
        server = self._wslink_server
        site = web.SockSite(server.runner, self.socket)
        await site.start()
        await server.site.stop()
        log.info("serving on %s only", self.path)
        announce()

    def close(self) -> None:
        """Remove the socket file (if it is still this one's)."""
        try:
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass
        self.socket.close()


def _free(path: Path) -> None:
    """The socket path must be new, or a socket nobody listens on any more (left by a killed run)."""
    if not path.parent.is_dir():
        raise InputError(f"cannot make the Unix socket {path}: {path.parent} is not a folder")
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not stat.S_ISSOCK(path.stat().st_mode):
        raise InputError(f"{path} exists and is not a socket: give a new path for --unix-socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # stale
            return
        except OSError as exc:
            raise InputError(f"cannot use the Unix socket {path}: {exc.strerror or exc}") from None
    raise InputError(f"{path} is in use by another server: give another --unix-socket path")
