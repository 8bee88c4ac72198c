"""The streaks seen in the image (rso.core.view_streaks): few-view cone-beam phases are told from CT by
the ripple of their fine detail around the in-plane directions, and without projection geometry native
RSO declines box steps on such a pair (docs/decisions.md, "Box steps without projection geometry")."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import resample_to_spacing
from test_native import native_session

from rso.core.projection.geometry import ProjectionGeometry
from rso.core.projection.matching import NO_GEOMETRY, reproject
from rso.core.view_streaks import STREAKS_SEEN, angular_modulation, no_geometry_decline, pair_modulation
from rso.options import NO_GEOMETRY_MAX_MODULATION
from rso.settings import RSOSettings


def clusters(first_deg: float) -> ProjectionGeometry:
    """An XVI-like full fan with 12 clusters of 3 views 30 degrees apart, one per breath."""
    angles = (first_deg + np.arange(12)[:, None] * 30.0 + np.arange(3)[None, :]).ravel()
    return ProjectionGeometry.circular(1000.0, 1536.0, angles)


@pytest.fixture(scope="module")
def fine_ct() -> sitk.Image:
    """The real chest CT at 2.5 mm in-plane (fine enough for the band; the shared one is 4.5 mm)."""
    from rso.simulation.fetch import fetch_data

    ct = sitk.ReadImage(str(fetch_data()["lung1"]), sitk.sitkFloat32)
    return resample_to_spacing(ct, (2.5, 2.5, 5.0))


@pytest.fixture(scope="module")
def phases(fine_ct) -> tuple[sitk.Image, sitk.Image]:
    """Two FDK phases of the same CT, each from its own clusters of views (their streaks differ)."""
    return reproject(fine_ct, clusters(0.0)), reproject(fine_ct, clusters(15.0))


def test_clustered_views_ripple_the_fine_detail_and_many_even_views_do_not(fine_ct, phases):
    even = reproject(fine_ct, ProjectionGeometry.circular(1000.0, 1536.0, np.arange(0.0, 360.0, 2.0)))
    values = {"ct": angular_modulation(fine_ct), "even": angular_modulation(even)}
    values["clustered"] = pair_modulation(*phases)
    assert values["ct"] < NO_GEOMETRY_MAX_MODULATION and values["even"] < NO_GEOMETRY_MAX_MODULATION, values
    assert values["clustered"] > 2 * NO_GEOMETRY_MAX_MODULATION, values


def test_the_axial_planes_follow_the_image_direction(phases):
    """The same voxels stored with the superior axis first (i) are measured in the same planes."""
    image = phases[0]
    turned = sitk.PermuteAxes(image, [2, 0, 1])  # i <- k: the direction matrix follows the data
    assert np.abs(np.array(turned.GetDirection()).reshape(3, 3)[2, 0]) == 1.0
    assert angular_modulation(turned) == pytest.approx(angular_modulation(image), rel=1e-3)


def test_images_too_coarse_for_the_band_are_not_measured(chest_ct, fine_ct):
    assert angular_modulation(chest_ct) is None  # 4.5 mm pixels: the band lies beyond Nyquist
    assert pair_modulation(chest_ct, fine_ct) == angular_modulation(fine_ct)
    assert pair_modulation(chest_ct, chest_ct) is None
    assert no_geometry_decline(None) is None
    assert no_geometry_decline(NO_GEOMETRY_MAX_MODULATION - 0.01) is None
    assert no_geometry_decline(NO_GEOMETRY_MAX_MODULATION).startswith("no projection geometry")


def test_without_geometry_native_rso_declines_on_streaky_phases_and_says_why(phases, chest_ct):
    session = native_session((*phases, None))
    # test_native's lung point (an index of the 4.5 mm CT), a 40 mm box around it
    centre = np.array(chest_ct.TransformContinuousIndexToPhysicalPoint([30.0, 28.0, 12.0]))
    box = session.box_from_lps(centre - 20.0, centre + 20.0)
    before = session.field_voxels.copy()
    record = session.rso(box, RSOSettings())
    assert record.declined == no_geometry_decline(session.pair.view_modulation)
    assert "geometry files" in record.declined and record.params["view_modulation"] > 0.9
    status = session.pair.matching_status(True)
    assert status.startswith(f"{NO_GEOMETRY}; {STREAKS_SEEN} (angular modulation "), status
    assert np.array_equal(session.field_voxels, before) and len(session.history) == 0
    # with the scan's rule off the step runs: whatever its guard says, not for this reason
    record = session.rso(box, RSOSettings(scan_rule=False, iterations=3))
    assert "view_modulation" not in record.params
    assert record.declined is None or not record.declined.startswith("no projection geometry")


def test_a_ct_pair_without_geometry_is_measured_and_not_ruled_out(fine_ct):
    session = native_session((fine_ct, fine_ct, None))
    assert session.pair.view_modulation < NO_GEOMETRY_MAX_MODULATION
    assert no_geometry_decline(session.pair.view_modulation) is None
    assert session.pair.matching_status(True) == NO_GEOMETRY
