"""Slightly wrong projection geometries: what artefact matching does when a scan's geometry file is a
little off (scripts/conebeam_study.py ``--wrong``, the benchmark's wrong-geometry arms)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rso.core.projection.geometry import ProjectionGeometry

# The perturbations, in the order ``wrong_geometries`` returns them (the benchmark deals them out in turn).
WRONG_GEOMETRIES = ("angles +0.5 deg", "distances +1 %", "one cluster missing")


def wrong_geometries(geometry: ProjectionGeometry) -> dict[str, ProjectionGeometry]:
    """The geometry with every angle 0.5 degrees off, its distances 1 % off, or its largest cluster gone.

    A cluster is a run of views between gaps over twice the median gap (a phase bin of a 4D scan has one
    per breathing cycle). Views spread evenly (a parallel-beam case's) form one cluster, which cannot be
    removed: then "one cluster missing" is left out.
    """
    shifted = replace(geometry, gantry_deg=tuple(g + 0.5 for g in geometry.gantry_deg))
    scaled = replace(
        geometry,
        source_to_isocenter_mm=tuple(d * 1.01 for d in geometry.source_to_isocenter_mm),
        source_to_detector_mm=tuple(d * 1.01 for d in geometry.source_to_detector_mm),
    )
    angles = np.asarray(geometry.gantry_deg)
    breaks = np.flatnonzero(np.abs(np.diff(angles)) > 2.0 * np.median(np.abs(np.diff(angles))) + 1e-6) + 1
    clusters = np.split(np.arange(angles.size), breaks)
    largest = max(range(len(clusters)), key=lambda c: clusters[c].size)
    kept = [c for i, c in enumerate(clusters) if i != largest]
    wrong = {WRONG_GEOMETRIES[0]: shifted, WRONG_GEOMETRIES[1]: scaled}
    if sum(c.size for c in kept) >= 2:  # a geometry needs two views
        wrong[WRONG_GEOMETRIES[2]] = geometry.subset(np.concatenate(kept))
    return wrong
