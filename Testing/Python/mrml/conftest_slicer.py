"""Shared helpers for the MRML-layer tests (real slicer-core scene; no Slicer application).

Import the fixtures into a test module with ``from conftest_slicer import ...``. The module folder
(RSORegistration/) goes on sys.path here, as Slicer puts it there for the module: the tests import
RSORegistrationLib exactly as Slicer does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[3]
MODULE_DIR = REPO / "RSORegistration"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

TINY_CHANNELS = "4,8,16,32,64"
SMALL_GRID = "16,32,32"  # the model grid for logic tests: 8x fewer voxels than the demo image


@pytest.fixture
def app():
    from RSORegistrationLib.headless import new_scene

    return new_scene()


@pytest.fixture(scope="session")
def demo():
    from rso.simulation.phantom import phantom_pair

    return phantom_pair()


def oblique_image(
    size=(20, 24, 16), spacing=(1.5, 2.0, 3.0), origin=(10.0, -20.0, 30.0), seed=0
) -> sitk.Image:
    """A smooth random float image on a rotated grid: every geometry field is non-trivial."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.normal(size=size[::-1]).astype(np.float32) * 300.0)
    image = sitk.SmoothingRecursiveGaussian(image, 1.5)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(sitk.VersorTransform((0.2, 0.3, 1.0), 0.4).GetMatrix())
    return image


def roi_node(scene, ras_box, name="region"):
    """A placed Markups ROI spanning [R1, A1, S1, R2, A2, S2]."""
    from RSORegistrationLib.roi import roi_from_ras_box

    return roi_from_ras_box(scene, ras_box, name)


def egl_environment() -> dict:
    """Environment for an offscreen render in a child process (EGL through Mesa's llvmpipe)."""
    env = dict(os.environ)
    env.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MODULE_DIR), env.get("PYTHONPATH")]))
    return env
