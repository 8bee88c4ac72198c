"""Whether an image carries the streaks of a few-view cone-beam reconstruction, from the image alone.

A filtered backprojection sums one ramp-filtered line profile per view: by the central-slice theorem
each view fills one line through the origin of an axial slice's 2-D spectrum. An image made from many
evenly spread views (a CT, a 3-D CBCT) has its fine detail spread evenly over the in-plane directions,
up to the anatomy's own broad preferences (an oval body, ribs). A phase of a phase-binned 4D CBCT is
made from a few clusters of views, one per breath, 10 degrees and more apart: its fine detail comes in
spokes at the clusters' directions with gaps between them, the streaks seen in the image.

``angular_modulation`` measures those spokes: the ripple of the log power of an axial slice's fine
detail (wavelengths 6-14 mm) around the in-plane directions, at angular periods of 9-45 degrees
(the anatomy's preferences are broader). Without projection geometry, native RSO declines box steps on a
pair where it is high (``rso.options.NO_GEOMETRY_MAX_MODULATION``; docs/decisions.md, "Box steps
without projection geometry: the streaks seen in the image").
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from rso.options import NO_GEOMETRY_MAX_MODULATION

FREQUENCY_BAND = (0.07, 0.16)  # cycles/mm: the fine detail whose directions are measured
DIRECTION_BINS = 60  # 3 degree bins over the half-turn (a spectrum's line has two ends)
HARMONICS = (4, 20)  # angular periods 45 .. 9 degrees: narrower than the anatomy's, as wide as the gaps
MAX_SLICES = 32  # evenly spaced through the middle half of the image along its superior axis
MIN_BIN_SAMPLES = 4  # spectrum samples per direction bin; fewer: the image is too small to tell
HU_RANGE = (-1000.0, 1000.0)  # metal and beyond-range values would dominate the spectrum
# The status line's tail on such a pair given without geometry (ImagePair.matching_status).
STREAKS_SEEN = "the images carry few-view cone-beam streaks: native RSO declines box steps without the files"


def angular_modulation(image: sitk.Image) -> float | None:
    """The ripple of an image's fine detail around the directions of its axial planes.

    Args:
        image: a CT-like scalar volume in HU, any spacing and direction; its axial planes are the planes
            across the index axis nearest the patient's superior-inferior axis (as the default placement
            takes the scanner's rotation axis).

    Returns the RMS amplitude of the log power's angular harmonics 4-20 (dimensionless; 0 for detail spread
    evenly; the larger of a pair's two on the training anatomies: CT phases 0.15-0.38, XVI-like FDK phases
    0.17-0.51, TrueBeam-like 0.77-0.98), or None where the pixels are too coarse (over 3.1 mm in-plane) or
    the image too small to resolve the band.
    """
    volume, spacing = _axial_stack(image)
    band = _band(volume.shape[1:], spacing)
    if band is None:
        return None
    ring, bins = band
    power = np.zeros(DIRECTION_BINS)
    window = np.outer(np.hanning(volume.shape[1]), np.hanning(volume.shape[2]))
    for plane in volume:
        spectrum = np.abs(np.fft.fft2((plane - plane.mean()) * window)) ** 2
        power += np.bincount(bins, weights=spectrum[ring], minlength=DIRECTION_BINS)
    if power.min() <= 0:  # a blank image: no detail to spread
        return None
    harmonics = np.abs(np.fft.rfft(np.log(power)))[HARMONICS[0] : HARMONICS[1] + 1]
    return float(2.0 * np.sqrt((harmonics**2).sum()) / DIRECTION_BINS)


def pair_modulation(fixed: sitk.Image, moving: sitk.Image) -> float | None:
    """The larger of the two images' ``angular_modulation`` (None where neither can be measured): one
    streaky phase is enough for a box's similarity to follow streaks."""
    values = [v for v in (angular_modulation(fixed), angular_modulation(moving)) if v is not None]
    return max(values) if values else None


def no_geometry_decline(modulation: float | None) -> str | None:
    """Why native RSO declines every box of a pair given without projection geometry whose
    ``pair_modulation`` is ``modulation`` (None: it may refine)."""
    if modulation is None or modulation < NO_GEOMETRY_MAX_MODULATION:
        return None
    return (
        f"no projection geometry, and the images carry the streaks of few-view cone-beam phases (angular "
        f"modulation {modulation:.2f}; {NO_GEOMETRY_MAX_MODULATION:.2f} and above marks them): there a box's "
        "similarity follows the streaks as readily as the motion, so the box is left as it is; give both "
        "phases' projection geometry files to compare them artefact-matched"
    )


def _axial_stack(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float]]:
    """(slices, rows, columns) float32 HU across the index axis nearest superior, at most MAX_SLICES
    from its middle half, and the (row, column) spacing in mm."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    axis_itk = int(np.argmax(np.abs(direction[2])))  # the index axis whose direction is most superior
    volume = np.clip(sitk.GetArrayViewFromImage(image), *HU_RANGE)
    volume = np.moveaxis(volume, 2 - axis_itk, 0)
    in_plane = [a for a in (2, 1, 0) if a != axis_itk]  # numpy order of the two others: ITK axes reversed
    spacing = tuple(float(image.GetSpacing()[a]) for a in in_plane)
    n = volume.shape[0]
    picks = np.unique(np.linspace(n // 4, max(n // 4, 3 * n // 4 - 1), MAX_SLICES).round().astype(int))
    return volume[picks].astype(np.float32), spacing


def _band(shape: tuple[int, int], spacing: tuple[float, float]):
    """The spectrum samples in FREQUENCY_BAND ((rows, columns) bool) and their direction bins, or None
    where the pixels are too coarse for the band or some bin has fewer than MIN_BIN_SAMPLES (too small an
    image)."""
    if 0.5 / max(spacing) < FREQUENCY_BAND[1]:  # the band lies beyond the coarser axis's Nyquist limit
        return None
    rows = np.fft.fftfreq(shape[0], spacing[0])[:, None]
    columns = np.fft.fftfreq(shape[1], spacing[1])[None, :]
    radius = np.hypot(rows, columns)
    ring = (radius >= FREQUENCY_BAND[0]) & (radius <= FREQUENCY_BAND[1])
    angle = np.mod(np.arctan2(rows, columns), np.pi)[ring]
    bins = np.minimum((angle / np.pi * DIRECTION_BINS).astype(int), DIRECTION_BINS - 1)
    if np.bincount(bins, minlength=DIRECTION_BINS).min() < MIN_BIN_SAMPLES:
        return None
    return ring, bins
