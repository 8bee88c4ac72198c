"""RSORegistrationReview: the browser review app (``rso-registration review``, docs/review-app.md).

trame-slicer renders Slicer's own slice views and markups in a web page served on loopback; the
registration runs through RSORegistrationLib's logic and the engine's worker process, exactly as
in the Slicer module. ``controller`` is the glue between the page and the logic (MRML only, no
web code); ``app`` builds the page and serves it; ``plot`` draws the loss curves.
"""

import logging
import os

# VTK picks its OpenGL window class when it first creates one: an offscreen EGL window (Mesa's
# llvmpipe without a GPU) needs no display. Set here, before any module of this package imports VTK.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

# The web stack logs every widget it builds at INFO, which would bury the registration's own lines.
for _name in ("trame_server", "trame_client", "trame_slicer", "trame_rca", "wslink", "aiohttp"):
    logging.getLogger(_name).setLevel(logging.WARNING)
