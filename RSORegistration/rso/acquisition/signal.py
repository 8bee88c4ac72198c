"""The breathing signal of a scan: read from a text file, or extracted from the projections themselves.

* A text file holds one value per projection: breathing phases in [0, 1) (RTK's signal files, 0 = end
  exhale) or a breathing amplitude (an external surrogate, a diaphragm position; larger = deeper inhale).
* Without a file, the signal comes from the projections: RTK's ``AmsterdamShroudImageFilter`` (the
  cranio-caudal derivative of each projection, summed across the panel, less its moving average over the
  projections; Zijp et al., ICCR 2004) followed by a dynamic-programming path along the diaphragm's edge,
  as RTK's ``DPExtractShroudSignalImageFilter`` (which RTK 2.7 does not wrap for Python).
* An amplitude becomes a phase as RTK's ``ExtractPhaseImageFilter`` does it (moving average, unsharp
  mask, Hilbert phase, extrema, phase linear between successive minima). It is reimplemented here with
  numpy: the filter RTK 2.7's wheels wrap finds no extrema even in a clean sine (its Hilbert transform
  assumes FFTW's sign convention; the wheels use ITK's VNL FFT).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rso.acquisition.readers import Projections, itk_reason, rtk_module
from rso.errors import InputError

log = logging.getLogger(__name__)

SIGNAL_KINDS = ("phase", "amplitude")
PHASE_MODELS = ("minima", "maxima", "local")  # RTK's LINEAR_BETWEEN_MINIMA / _MAXIMA, LOCAL_PHASE
SHROUD_UNSHARP = 17  # rtkamsterdamshroud's default, in projections
PHASE_UNSHARP = 55  # rtkextractphasesignal's default, in projections
EDGE_STEP_MM = 8.0  # largest move of the diaphragm's edge between two projections, at the detector


def read_signal(path: str | Path, count: int) -> np.ndarray:
    """(count,) float64 values, one per projection, from a text file (whitespace or commas; # comments)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"breathing signal not found: {path}")
    values = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        for token in line.split("#", 1)[0].replace(",", " ").split():
            try:
                values.append(float(token))
            except ValueError:
                raise InputError(
                    f"breathing signal {path}, line {number}: {token!r} is not a number"
                ) from None
    signal = np.asarray(values, dtype=float)
    if signal.size != count:
        raise InputError(
            f"breathing signal {path.name} has {signal.size} values but there are {count} projections: "
            "one value per projection is needed"
        )
    if not np.isfinite(signal).all():
        raise InputError(f"breathing signal {path}: every value must be finite")
    return signal


def check_phases(phases: np.ndarray, what: str) -> np.ndarray:
    """Phases must lie in [0, 1) (RTK's convention); 1.0 itself is taken as 0."""
    phases = np.asarray(phases, dtype=float)
    if phases.min() < 0.0 or phases.max() > 1.0:
        raise InputError(
            f"{what}: phases must lie in [0, 1) (found {phases.min():.3g} to {phases.max():.3g}); "
            "for a breathing amplitude pass --signal-kind amplitude"
        )
    return np.where(phases >= 1.0, 0.0, phases)


def _moving_average(signal: np.ndarray, size: int) -> np.ndarray:
    """ITK's ConvolutionImageFilter with a flat kernel: same length, centred, zero-flux Neumann edges."""
    size = max(1, min(int(size), signal.size))
    before = size // 2
    padded = np.pad(signal, (before, size - 1 - before), mode="edge")
    return sliding_window_view(padded, size).mean(axis=1)


def _analytic_phase(signal: np.ndarray) -> np.ndarray:
    """The phase (radians, (-pi, pi]) of the analytic signal (Marple's discrete Hilbert transform)."""
    n = signal.size
    weights = np.zeros(n)
    weights[0] = 1.0
    weights[1 : (n + 1) // 2] = 2.0
    if n % 2 == 0:
        weights[n // 2] = 1.0
    return np.angle(np.fft.ifft(np.fft.fft(signal) * weights))


def _extrema(signal: np.ndarray, phase: np.ndarray) -> tuple[list[int], list[int]]:
    """Minima and maxima positions, as RTK finds them: from the Hilbert phase, then refined on the signal."""
    minima, maxima, last = [], [], 0
    for i in range(1, phase.size):
        prev, curr = phase[i - 1], phase[i]
        if curr * prev <= 0.0:
            if last != 1 and curr >= 0.0 and curr - prev <= np.pi:
                maxima.append(i)
                last = 1
            elif last != 2 and curr < 0.0 and prev - curr > np.pi:
                minima.append(i)
                last = 2
    if not minima or not maxima:
        raise InputError("breathing signal: no breathing cycle found (too short or too flat a signal)")
    return _refine(signal, minima, maxima, np.argmin), _refine(signal, maxima, minima, np.argmax)


def _refine(signal: np.ndarray, positions: list[int], others: list[int], pick) -> list[int]:
    """Move each extremum to the signal's extreme sample between the neighbouring opposite extrema.

    Where the extreme value lasts several samples (an edge tracked in whole pixels), the middle of that
    run is taken; RTK takes its first sample, which shifts every phase by half the run.
    """
    bounds = [0, *others, signal.size]
    refined = []
    for position in positions:
        right = int(np.searchsorted(bounds, position, side="right"))
        low, high = bounds[right - 1], bounds[min(right, len(bounds) - 1)]
        window = signal[low : max(high, low + 1)]
        first = int(pick(window))
        run = np.flatnonzero(window[first:] != window[first])
        length = int(run[0]) if run.size else window.size - first
        refined.append(low + first + (length - 1) // 2)
    return sorted(set(refined))


def _linear_between(positions: list[int], count: int) -> np.ndarray:
    """Phase rising linearly from 0 to 1 between successive positions, extrapolated at both ends."""
    if len(positions) < 2:
        raise InputError("breathing signal: fewer than two breathing cycles found; a phase needs two")
    phase = np.empty(count)
    index = np.arange(count, dtype=float)
    first, second = positions[0], positions[1]
    phase[:first] = (index[:first] - first) / (second - first)
    for a, b in zip(positions[:-1], positions[1:]):
        phase[a:b] = (index[a:b] - a) / (b - a)
    a, b = positions[-2], positions[-1]
    phase[b:] = (index[b:] - a) / (b - a)
    return phase - np.floor(phase)


def phase_of(
    signal, model: str = "minima", moving_average: int = 1, unsharp: int = PHASE_UNSHARP
) -> np.ndarray:
    """(P,) phases in [0, 1) from a (P,) breathing amplitude, as RTK's ``ExtractPhaseImageFilter``.

    ``model``: "minima" (phase 0 at each minimum: end exhale when the amplitude grows with inhale),
    "maxima", or "local" (the Hilbert phase itself). Sizes in projections.
    """
    signal = np.asarray(signal, dtype=float)
    if model not in PHASE_MODELS:
        raise InputError(f"phase model must be one of {PHASE_MODELS}, got {model!r}")
    if signal.size < 4 or np.ptp(signal) == 0:
        raise InputError("breathing signal: too short or flat to extract a phase")
    smooth = _moving_average(signal, moving_average)
    detrended = smooth - _moving_average(smooth, unsharp)
    phase = _analytic_phase(detrended)
    if model == "local":
        return (phase / (2 * np.pi)) % 1.0
    minima, maxima = _extrema(signal, phase)
    return _linear_between(minima if model == "minima" else maxima, signal.size)


def amsterdam_shroud(projections: Projections, unsharp: int = SHROUD_UNSHARP) -> np.ndarray:
    """(P, V) RTK's Amsterdam shroud of the projections, negated so that edges where the line integrals
    fall towards +v (lung above the diaphragm, RTK's v along the superior axis) are its minima."""
    import itk

    rtk = rtk_module()
    stack = itk.GetImageFromArray(np.ascontiguousarray(-projections.line_integrals, dtype=np.float32))
    stack.SetSpacing([*projections.spacing_mm, 1.0])
    stack.SetOrigin([*projections.origin_mm, 0.0])
    shroud = rtk.AmsterdamShroudImageFilter[type(stack)].New()
    shroud.SetInput(stack)
    shroud.SetUnsharpMaskSize(int(max(1, min(unsharp, projections.count))))
    try:
        shroud.Update()
    except RuntimeError as error:
        raise InputError(f"RTK's Amsterdam shroud failed: {itk_reason(error)}") from None
    return np.asarray(itk.GetArrayFromImage(shroud.GetOutput()), dtype=float)


def edge_path(shroud: np.ndarray, max_step: int) -> np.ndarray:
    """(P,) row index of the path through the (P, V) shroud's lowest values moving at most ``max_step``
    rows between projections (dynamic programming, as RTK's DPExtractShroudSignalImageFilter)."""
    target = -np.asarray(shroud, dtype=float)
    views, rows = target.shape
    step = max(1, int(max_step))
    score = target[0].copy()
    came_from = np.zeros((views, rows), dtype=int)
    for t in range(1, views):
        padded = np.pad(score, step, constant_values=-np.inf)
        window = sliding_window_view(padded, 2 * step + 1)
        best = np.argmax(window, axis=1)
        came_from[t] = np.arange(rows) + best - step
        score = target[t] + window[np.arange(rows), best]
    path = np.empty(views, dtype=int)
    path[-1] = int(np.argmax(score))
    for t in range(views - 1, 0, -1):
        path[t - 1] = came_from[t, path[t]]
    return path


def shroud_signal(projections: Projections, unsharp: int = SHROUD_UNSHARP, step_mm: float = EDGE_STEP_MM):
    """(P,) breathing amplitude (mm at the detector) from the projections: minus the diaphragm edge's v,
    so that it grows as the diaphragm descends on inhale (RTK's v along the patient's superior axis)."""
    shroud = amsterdam_shroud(projections, unsharp)
    spacing_v = projections.spacing_mm[1]
    rows = edge_path(shroud, int(round(step_mm / spacing_v)))
    position_mm = projections.origin_mm[1] + rows * spacing_v
    log.info(
        "shroud signal: edge between %.1f and %.1f mm on the detector", position_mm.min(), position_mm.max()
    )
    return -position_mm
