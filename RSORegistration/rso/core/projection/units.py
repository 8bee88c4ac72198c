"""Hounsfield units and linear attenuation: what a projector integrates along its rays."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at about 70 keV


def hu_to_mu(hu, clip_below_air: bool = True):
    """HU -> mu (1/mm): (HU + 1000) / 1000 x mu_water, 0 below air unless ``clip_below_air`` is off.

    A sitk.Image (returned on the same grid) or an ndarray (float32).
    """
    if isinstance(hu, sitk.Image):
        mu = sitk.GetImageFromArray(hu_to_mu(sitk.GetArrayFromImage(hu), clip_below_air))
        mu.CopyInformation(hu)
        return mu
    mu = (np.asarray(hu, dtype=np.float32) + 1000.0) / 1000.0 * MU_WATER_PER_MM
    return np.clip(mu, 0.0, None) if clip_below_air else mu


def mu_to_hu(mu):
    """mu (1/mm) -> HU, the inverse of ``hu_to_mu`` above air. A sitk.Image or an ndarray (float32)."""
    if isinstance(mu, sitk.Image):
        hu = sitk.GetImageFromArray(mu_to_hu(sitk.GetArrayFromImage(mu)))
        hu.CopyInformation(mu)
        return hu
    return (np.asarray(mu, dtype=np.float32) / MU_WATER_PER_MM * 1000.0 - 1000.0).astype(np.float32)
