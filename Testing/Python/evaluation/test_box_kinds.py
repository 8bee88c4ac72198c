"""The evaluation's box kinds (rso.evaluation.box_kinds) on real CT with a known field."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEST_GRID, session_of

from rso.errors import InputError
from rso.evaluation.box_kinds import box_tre_map, pick_boxes


@pytest.fixture
def session(known_pair, tiny_net):
    """No step yet: the field is zero, so the error is the truth itself (largest at its local bump)."""
    fixed, moving, truth = known_pair
    return session_of(fixed, moving, tiny_net, grid=TEST_GRID, truth=truth, device="cpu", precision="fp32")


def box_tre(session, box) -> float:
    return session.metrics(box=box)["tre_mm_box"]["mean"]


def test_misaligned_boxes_go_where_the_field_is_worst(session):
    first, second = pick_boxes(session, "misaligned", 2, 30.0)
    scores, allowed = box_tre_map(session, 30.0)
    assert box_tre(session, first) == pytest.approx(scores[allowed].max(), rel=0.05)
    assert box_tre(session, first) >= box_tre(session, second)
    a, b = first.voxels, second.voxels
    assert any(a.hi[k] <= b.lo[k] or b.hi[k] <= a.lo[k] for k in range(3))  # no overlap


def test_control_boxes_are_where_the_field_is_already_good(session):
    scores, allowed = box_tre_map(session, 30.0)
    boxes = pick_boxes(session, "control", 2, 30.0, seed=3)
    assert len(boxes) == 2
    for box in boxes:
        assert box_tre(session, box) < np.median(scores[allowed]) + 0.05
    assert pick_boxes(session, "control", 2, 30.0, seed=3) == boxes  # seeded: the same boxes again


def test_boxes_whose_true_targets_leave_the_moving_image_are_never_chosen(known_pair, tiny_net):
    fixed, moving, truth = known_pair
    size = moving.GetSize()
    cut = moving[:, :, size[2] // 2 :]  # the moving image lost its lower half: no anatomy there to find
    session = session_of(fixed, cut, tiny_net, grid=TEST_GRID, truth=truth, device="cpu")
    lowest_in_view = cut.TransformContinuousIndexToPhysicalPoint((0, 0, -0.5))[2]  # its lowest voxel's edge
    for kind in ("misaligned", "control", "residual"):
        for box in pick_boxes(session, kind, 2, 30.0):
            lo, hi = box.voxels.lo, box.voxels.hi
            index = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
            targets = (
                session.grid.index_to_lps_points(index)
                + session.truth_mm[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            )
            assert targets[..., 2].min() >= lowest_in_view - 1e-6, kind


def test_truth_based_kinds_need_a_truth(known_pair, tiny_net):
    fixed, moving, _ = known_pair
    session = session_of(fixed, moving, tiny_net, grid=TEST_GRID, device="cpu")
    with pytest.raises(InputError, match="ground-truth"):
        pick_boxes(session, "misaligned")
    with pytest.raises(InputError, match="box kind"):
        pick_boxes(session, "worst")
    assert pick_boxes(session, "residual", 1, 30.0)
