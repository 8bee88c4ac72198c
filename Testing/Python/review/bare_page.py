"""A bare trame page behind the review page's access checks (RSORegistrationReview.access): the real
wslink/aiohttp server and trame client, without Slicer, so the checks are tested in seconds.

``python bare_page.py TOKEN [SOCKET]`` prints ``ready PORT`` once the page can be reached (PORT: the
TCP port it was first served on; with SOCKET, it then listens on the Unix socket only).
"""

from __future__ import annotations

import sys

from trame.app import get_server
from trame.ui.html import DivLayout
from trame.widgets import html

from RSORegistrationReview.access import ReviewAccess, UnixSocket, protect


def main() -> None:
    token, socket_path = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    sys.argv = sys.argv[:1]  # trame reads its options from the command line
    access = ReviewAccess(token=token, unix_socket=socket_path)
    if socket_path:
        access.socket = UnixSocket(socket_path)
    server = get_server("bare-page", client_type="vue3")
    with DivLayout(server):
        html.Div("bare page", id="bare")
    protect(server, access, lambda: print(f"ready {server.port}", flush=True))
    try:
        server.start(host="127.0.0.1", port=0, open_browser=False, show_connection_info=False, timeout=0)
    finally:
        if access.socket is not None:
            access.socket.close()


if __name__ == "__main__":
    main()
