"""Sorting a scan's projections into breathing phases, and what each phase got (views, clusters, arc).

The binning is the clinical one of ``rso.simulation.breathing.phase_bins``: bin k takes the projections
whose phase lies within 1 / (2 N) of k / N (bin 0 centred on end exhale). A phase's views come in
clusters, one per breath, separated by the angle the gantry turned in the rest of that breath.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rso.errors import InputError
from rso.simulation.breathing import cluster_summary, phase_bins

MIN_VIEWS = 2  # FDK needs two views at least; far fewer than a useful image needs


@dataclass(frozen=True)
class PhaseSorting:
    """Per projection (shape (P,)): ``phase`` in [0, 1) and its ``bins`` (0..count-1)."""

    phase: np.ndarray
    bins: np.ndarray
    count: int

    def indices(self, k: int) -> np.ndarray:
        """(views,) the projections of phase ``k``, in acquisition order."""
        return np.flatnonzero(self.bins == k)

    def summary(self, geometry) -> list[dict]:
        """Per phase: views, clusters, views per cluster, the gaps between clusters and the arc covered
        (degrees), from the scan's ``ProjectionGeometry``."""
        rows = []
        for k in range(self.count):
            picked = self.indices(k)
            row = {"phase": k, **cluster_summary(self.bins, k, geometry.gantry_deg)}
            row["arc_deg"] = round(geometry.subset(picked).arc_deg, 3) if picked.size >= MIN_VIEWS else 0.0
            rows.append(row)
        return rows


def sort_phases(phase, count: int) -> PhaseSorting:
    """Bin (P,) phases in [0, 1) into ``count`` phases; every phase needs ``MIN_VIEWS`` projections."""
    phase = np.asarray(phase, dtype=float)
    if count < 1:
        raise InputError(f"--phases must be at least 1, got {count}")
    bins = phase_bins(phase, count)
    views = np.bincount(bins, minlength=count)
    thin = [k for k in range(count) if views[k] < MIN_VIEWS]
    if thin:
        raise InputError(
            f"phase {thin[0]} gets {views[thin[0]]} of {phase.size} projections "
            f"({len(thin)} phase(s) under {MIN_VIEWS}): use fewer --phases or check the breathing signal"
        )
    return PhaseSorting(phase, bins, count)
