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
    shift = np.array(image.GetDirection()).reshape(3, 3) @ ((np.array(spacing) - np.array(image.GetSpacing())) / 2)
    reference.SetOrigin((np.array(image.GetOrigin()) + shift).tolist())
    smoothed = sitk.SmoothingRecursiveGaussian(image, [s / 2 for s in spacing])
    return sitk.Resample(smoothed, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)


def breathing_like_field(image: sitk.Image, amplitude_mm: float, bump_mm: float, bump_centre) -> sitk.Image:
    """A smooth field (LPS mm) on the image grid: global SI motion growing inferiorly plus one local bump.

    The bump is what a clinician's box would target: a region the whole-image fit leaves wrong.
    """
    size = image.GetSize()
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in size[::-1]], indexing="ij")
    field = np.zeros((*size[::-1], 3))
    field[..., 2] = amplitude_mm * 0.5 * (1 - z) * np.exp(-(x**2 + y**2) / 0.8)  # SI, largest inferiorly
    field[..., 1] = 0.3 * amplitude_mm * np.exp(-(x**2 + (y + 0.3) ** 2 + z**2) / 0.6)  # AP
    cz, cy, cx = bump_centre
    bump = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / 0.05)
    field[..., 0] += bump_mm * bump
    field[..., 2] += 0.5 * bump_mm * bump
    result = sitk.GetImageFromArray(field, isVector=True)
    result.CopyInformation(image)
    return result


@pytest.fixture(scope="session")
def known_pair(chest_ct):
    """(fixed, moving, truth): moving is the CT; fixed is the CT warped by the truth field.

    Building fixed as moving(x + u(x)) makes u the exact fixed -> moving truth, no inversion.
    """
    truth = breathing_like_field(chest_ct, amplitude_mm=12.0, bump_mm=9.0, bump_centre=(0.1, -0.1, 0.35))
    transform = sitk.DisplacementFieldTransform(sitk.Image(truth))
    fixed = sitk.Resample(chest_ct, chest_ct, transform, sitk.sitkLinear, -1000.0)
    return fixed, chest_ct, truth


@pytest.fixture
def tiny_net():
    from rso.core.model import ModelConfig, RegistrationNet

    torch.manual_seed(0)
    return RegistrationNet(ModelConfig(channels=TINY_CHANNELS, grid=TEST_GRID))


@pytest.fixture
def make_session(known_pair, tiny_net):
    from rso.core.session import RegistrationSession

    fixed, moving, truth = known_pair

    def make(**kwargs):
        kwargs.setdefault("net", tiny_net)
        kwargs.setdefault("truth", truth)
        kwargs.setdefault("device", "cpu")
        # The tiny test network's 2x4x4 bottleneck is where bf16 can overflow; the quality
        # thresholds here are about the method, so they run in fp32 (bf16 has its own tests).
        kwargs.setdefault("precision", "fp32")
        return RegistrationSession(fixed, moving, **kwargs)

    return make


def write(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)
