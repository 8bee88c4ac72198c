"""An irregular breathing trace and clinical phase binning of a 4D CBCT's projections.

A 4D CBCT acquisition takes projections at a steady frame rate while the patient breathes; each
projection is sorted into the breathing phase it was taken in. Breaths differ in length and depth,
so each phase gets a few consecutive projections per breath (a cluster), one cluster per breath,
separated by the angle the gantry turns in the rest of that breath.

The trace: breath i lasts P_i seconds and has amplitude A_i (both drawn log-normally per breath,
with the given mean and coefficient of variation); a breath starts and ends at end exhale. At time
s inside breath i the cycle fraction is t = (s - start_i) / P_i in [0, 1) (0 = end exhale, 0.5 =
end inhale, as rso.simulation.motion) and the respiratory signal is A_i * b(t), b =
motion.breathing_curve. The signal is continuous: b(0) = 0 where the amplitude changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rso.errors import InputError


@dataclass(frozen=True)
class BreathingParams:
    mean_period_s: float = 4.0  # adult free breathing: 3-5 s
    period_cv: float = 0.15  # breath-to-breath variation of the period (coefficient of variation)
    amplitude_cv: float = 0.15  # breath-to-breath variation of the depth; the mean amplitude is 1
    exponent: int = 2  # n in b(t) = sin^(2n)(pi t), as MotionParams.breathing_exponent


@dataclass(frozen=True, eq=False)  # arrays: compare their fields instead
class BreathingTrace:
    """A breathing trace sampled at projection times.

    Per sample (shape (P,)): ``times_s``, the cycle fraction ``t`` in [0, 1), the amplitude ``a``
    and the ``breath`` it lies in (0, 1, ...). Per breath (shape (B,)): ``starts_s`` (end exhale),
    ``periods_s``, ``amplitudes``.
    """

    params: BreathingParams
    times_s: np.ndarray
    t: np.ndarray
    a: np.ndarray
    breath: np.ndarray
    starts_s: np.ndarray
    periods_s: np.ndarray
    amplitudes: np.ndarray

    @classmethod
    def draw(cls, times_s, seed: int = 0, params: BreathingParams = BreathingParams()) -> BreathingTrace:
        """A seeded trace at ``times_s`` (seconds, ascending, shape (P,)); the scan starts at a random
        point of the first breath."""
        times = np.asarray(times_s, dtype=float)
        if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) < 0):
            raise InputError("breathing trace times must be a non-empty ascending 1-D sequence")
        if params.mean_period_s <= 0 or params.period_cv < 0 or params.amplitude_cv < 0:
            raise InputError(f"breathing parameters must be positive: {params}")
        rng = np.random.default_rng([seed, 7])
        span = times[-1] - times[0]
        count = int(np.ceil(span / params.mean_period_s * 2.0)) + 4  # enough breaths even if all are short
        periods = _lognormal(rng, params.mean_period_s, params.period_cv, count)
        while periods.sum() < span + periods[0]:  # vanishingly rare; keep drawing rather than fail
            periods = np.concatenate(
                [periods, _lognormal(rng, params.mean_period_s, params.period_cv, count)]
            )
        amplitudes = _lognormal(rng, 1.0, params.amplitude_cv, periods.size)
        starts = times[0] - rng.uniform(0.0, periods[0]) + np.concatenate([[0.0], np.cumsum(periods[:-1])])
        breath = np.searchsorted(starts, times, side="right") - 1
        used = int(breath.max()) + 1
        t = np.clip((times - starts[breath]) / periods[breath], 0.0, np.nextafter(1.0, 0.0))
        return cls(
            params, times, t, amplitudes[breath], breath, starts[:used], periods[:used], amplitudes[:used]
        )

    @property
    def count(self) -> int:
        return int(self.times_s.size)

    def signal(self) -> np.ndarray:
        """The 1-D respiratory signal a * b(t) at each sample, shape (P,): 0 at end exhale, ~1 at end inhale.

        b is motion.breathing_curve, vectorised (this module stays numpy-only: no SimpleITK import).
        """
        b = np.sin(np.pi * self.t) ** (2 * self.params.exponent)
        return self.a * b

    def summary(self) -> dict:
        """Parameters and what was drawn (for case.json)."""
        return {
            "params": asdict(self.params),
            "samples": self.count,
            "breaths": int(self.periods_s.size),
            "period_s": _stats(self.periods_s),
            "amplitude": _stats(self.amplitudes),
        }


def _lognormal(rng: np.random.Generator, mean: float, cv: float, count: int) -> np.ndarray:
    """Positive draws with the given mean and coefficient of variation (shape (count,))."""
    sigma2 = np.log1p(cv**2)
    return rng.lognormal(np.log(mean) - 0.5 * sigma2, np.sqrt(sigma2), count)


def _stats(values: np.ndarray) -> dict:
    return {
        "mean": float(values.mean()),
        "cv": float(values.std() / values.mean()) if values.size > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def phase_bins(t, phases: int) -> np.ndarray:
    """Clinical phase binning: bin k covers cycle fractions within 1 / (2 phases) of k / phases.

    Bin 0 is centred on end exhale (it takes the end of one breath and the start of the next).
    ``t``: cycle fractions, shape (P,); returns bin indices 0..phases-1, shape (P,), int.
    """
    if phases < 1:
        raise InputError(f"phases must be at least 1, got {phases}")
    return (np.floor(np.asarray(t, dtype=float) * phases + 0.5).astype(int) % phases).astype(int)


def clusters(bins, k: int) -> list[tuple[int, int]]:
    """Runs of consecutive projections in bin ``k``: [(start, stop), ...], stop exclusive, in order."""
    inside = np.concatenate([[False], np.asarray(bins) == k, [False]])
    edges = np.flatnonzero(np.diff(inside.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def cluster_gaps(runs: list[tuple[int, int]], gantry_deg) -> np.ndarray:
    """The gantry angle (degrees) between the last projection of each cluster and the first of the next.

    ``runs`` from ``clusters``; ``gantry_deg`` the angle of every projection, shape (P,). Returns
    shape (len(runs) - 1,) (no wrap-around from the last cluster to the first).
    """
    angles = np.asarray(gantry_deg, dtype=float)
    return np.array([abs(angles[b] - angles[a - 1]) for (_, a), (b, _) in zip(runs[:-1], runs[1:])])


def cluster_summary(bins, k: int, gantry_deg) -> dict:
    """Views, clusters and the gaps between them (degrees) of bin ``k`` (for case.json and logs)."""
    runs = clusters(bins, k)
    sizes = np.array([b - a for a, b in runs]) if runs else np.zeros(0, int)
    gaps = cluster_gaps(runs, gantry_deg)
    return {
        "views": int(sizes.sum()),
        "clusters": len(runs),
        "views_per_cluster": {"mean": float(sizes.mean()), "max": int(sizes.max())} if runs else None,
        "gap_deg": {
            "median": float(np.median(gaps)),
            "max": float(gaps.max()),
            "share_over_10deg": float((gaps >= 10.0).mean()),
        }
        if gaps.size
        else None,
    }


def quantise_instants(points, tolerance: float, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Group instants into states whose representative lies within ``tolerance`` of every member.

    ``points``: shape (P, n), each instant's coefficients (the simulator: a * c_i(t) for each motion
    term i). The distance of two instants is max_j sum_i weights[j, i] * |p_i - q_i|, ``weights`` shape
    (J, n) (default: one row of ones, the L1 distance); with weights[j] the terms' displacement
    magnitudes (mm) at voxel j it bounds how far the two instants' displacements differ there.
    Greedy k-centre (within twice the fewest states possible): start from the median instant of the
    first coefficient, add the instant farthest from every representative until all are within
    tolerance. Returns (state of each instant, shape (P,); the representative instant of each state,
    shape (S,), in the order chosen).
    """
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    weights = np.ones((1, points.shape[1])) if weights is None else np.asarray(weights, dtype=float)
    if points.shape[0] == 0:
        return np.zeros(0, int), np.zeros(0, int)
    distance = lambda r: (np.abs(points - points[r]) @ weights.T).max(axis=1)  # noqa: E731
    representatives = [int(np.argsort(points[:, 0], kind="stable")[len(points) // 2])]
    nearest = distance(representatives[0])
    labels = np.zeros(len(points), int)
    while nearest.max() > tolerance:
        far = int(np.argmax(nearest))
        to_far = distance(far)
        labels[to_far < nearest] = len(representatives)
        nearest = np.minimum(nearest, to_far)
        representatives.append(far)
    return labels, np.asarray(representatives, int)
