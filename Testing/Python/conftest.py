"""Shared fixtures: real chest CT anatomy (from the fetch-data cache) and pairs with known motion.

The engine tests use a tiny network and a 32x64x64 model grid so that the suite runs on 2 CPU
cores in minutes; one test builds the paper's full architecture.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

# The tests are measured on 2 cores; more threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_CHANNELS = (4, 8, 16, 32, 64)
TEST_GRID = (32, 64, 64)


@pytest.fixture(scope="session")
def chest_ct() -> sitk.Image:
    """A real chest CT (pyradiomics lung1), resampled to 4 x 4 x 5 mm: small, still anatomy."""
    from rso.simulation.fetch import fetch_data

    ct = sitk.ReadImage(str(fetch_data()["lung1"]), sitk.sitkFloat32)
    return resample_to_spacing(ct, (4.5, 4.5, 5.0))


def resample_to_spacing(image: sitk.Image, spacing) -> sitk.Image:
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    size = np.maximum(np.round(extent / np.array(spacing)).astype(int), 2)
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetDirection(image.GetDirection())
    shift = np.array(image.GetDirection()).reshape(3, 3) @ (
        (np.array(spacing) - np.array(image.GetSpacing())) / 2
    )
    reference.SetOrigin((np.array(image.GetOrigin()) + shift).tolist())
    smoothed = sitk.SmoothingRecursiveGaussian(image, [s / 2 for s in spacing])
    return sitk.Resample(smoothed, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)


@pytest.fixture(scope="session")
def known_pair(chest_ct):
    """(fixed, moving, truth): moving is the CT; fixed is the CT warped by the truth field.

    Building fixed as moving(x + u(x)) makes u the exact fixed -> moving truth, no inversion.
    """
    from rso.simulation.phantom import breathing_like_field, pair_from_field

    pair = pair_from_field(
        chest_ct,
        breathing_like_field(chest_ct, amplitude_mm=12.0, bump_mm=9.0, bump_centre=(0.1, -0.1, 0.35)),
    )
    return pair.fixed, pair.moving, pair.truth


@pytest.fixture
def tiny_net():
    from rso.core.model import ModelConfig, RegistrationNet

    torch.manual_seed(0)
    return RegistrationNet(ModelConfig(channels=TINY_CHANNELS, grid=TEST_GRID))


ENGINE_KEYWORDS = ("grid", "device", "precision", "seed", "network_similarity", "network_smoothness")


def session_of(fixed, moving, net, folder=None, **keywords):
    """A RegistrationSession on in-memory images: ``keywords`` name its other images (truth, mask,
    fit_mask, initial_transform, the geometries, placement) and EngineSettings fields (grid, device, ...)."""
    from rso.core.session import RegistrationSession
    from rso.settings import EngineSettings

    engine = EngineSettings(**{k: keywords.pop(k) for k in ENGINE_KEYWORDS if k in keywords})
    normalisation = keywords.pop("normalisation", None)
    images = {"fixed": fixed, "moving": moving, **keywords}
    return RegistrationSession(images, net, engine=engine, folder=folder, normalisation=normalisation)


@pytest.fixture
def make_session(known_pair, tiny_net):
    fixed, moving, truth = known_pair

    def make(**kwargs):
        kwargs.setdefault("truth", truth)
        kwargs.setdefault("device", "cpu")
        # The tiny test network's 2x4x4 bottleneck is where bf16 can overflow; the quality
        # thresholds here are about the method, so they run in fp32 (bf16 has its own tests).
        kwargs.setdefault("precision", "fp32")
        return session_of(fixed, moving, kwargs.pop("net", tiny_net), **kwargs)

    return make


def write(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)
