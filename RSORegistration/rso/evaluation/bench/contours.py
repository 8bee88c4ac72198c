"""Contours carried by each arm's field: Dice and HD95 of the simulator's labels against their truth.

The simulator writes every phase's labels (rso.simulation.case_labels: right lung, left lung, a
5-mm nodule and, in the local presets, the inserted lesion). An arm's field (fixed -> moving, on the
fixed image's grid) carries the moving phase's labels onto the fixed image (rso.core.labels), where
phase 0's labels are the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from rso.core.labels import overlap, propagate, read_labels
from rso.simulation.case_labels import LABELS, case_labels


@dataclass(frozen=True)
class CaseLabels:
    moving: sitk.Image  # the moving phase's labels, on the moving image's grid
    truth: sitk.Image  # phase 0's labels, on the fixed image's grid

    @classmethod
    def of(cls, folder, moving_phase: int) -> CaseLabels:
        return cls(read_labels(case_labels(folder, moving_phase))[0], read_labels(case_labels(folder, 0))[0])


def contour_scores(labels: CaseLabels | None, field: sitk.Image, fixed: sitk.Image) -> dict:
    """{label name: {"dice", "hd95_mm"}} of the labels the field carries; {} without labels."""
    if labels is None:
        return {}
    carried = propagate(labels.moving, field, fixed)
    scores = overlap(carried, labels.truth)
    return {
        LABELS[value].name: {"dice": score["dice"], "hd95_mm": score["hd95_mm"]}
        for value, score in scores.items()
        if value in LABELS
    }
