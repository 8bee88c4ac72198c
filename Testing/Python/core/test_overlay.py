"""The viewer's images after a native step, on its window alone (rso.core.overlay): each equals the whole
image's at the same voxels, and outside the window the whole images did not change."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TEST_GRID, session_of
from test_native import _untrained, lung_box, native_session, shifted_cbct, unshifted_cbct  # noqa: F401

from rso.core.overlay import changed_window, window_products, write_patch
from rso.core.results import write_images
from rso.service.viewer_files import ViewerFiles
from rso.settings import RSOSettings


@pytest.fixture(scope="module")
def stepped(shifted_cbct, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """A session with the whole viewer images before and after one accepted native step."""
    session = native_session(shifted_cbct)
    session.general()
    folder = tmp_path_factory.mktemp("viewer")
    before = _read(write_images(session, folder / "before"))
    record = session.rso(lung_box(session), RSOSettings(mode="native"))
    assert record.accepted, record.declined
    return session, before, _read(write_images(session, folder / "after"))


def _read(paths) -> dict[str, np.ndarray]:
    return {n: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for n, p in paths.items() if n != "quality"}


def test_the_window_products_equal_the_whole_images_there(stepped, tmp_path):
    session, before, after = stepped
    window = changed_window(session)
    shape = after["warped"].shape
    assert window is not None and 0 < np.prod(window.shape) < 0.5 * np.prod(shape)
    patch = {
        n: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        for n, p in write_patch(window_products(session, window), tmp_path).items()
    }
    assert set(patch) == {"warped", "difference", "displacement", "jacobian", "folding", "change"}
    for name, values in patch.items():
        whole = after[name][window.slices]
        assert values.shape == whole.shape, name
        tolerance = {"displacement": 1e-4, "jacobian": 1e-4, "change": 1e-4}.get(name, 0)
        np.testing.assert_allclose(values, whole, atol=tolerance, err_msg=name)
    assert np.abs(patch["change"]).max() > 1.0  # the step moved the box by millimetres


def test_outside_the_window_the_whole_images_did_not_change(stepped):
    session, before, after = stepped
    window = changed_window(session)
    for name in ("warped", "difference", "displacement", "jacobian", "folding"):
        outside = np.ones(after[name].shape[:3], bool)
        outside[window.slices] = False
        np.testing.assert_array_equal(after[name][outside], before[name][outside], err_msg=name)
    outside = np.ones(after["change"].shape, bool)
    outside[window.slices] = False
    assert not after["change"][outside].any()  # the change map is zero beyond the window


def test_a_step_that_changed_the_coarse_field_has_no_window(shifted_cbct):  # noqa: F811
    session = native_session(shifted_cbct)
    assert changed_window(session) is None  # no step yet
    session.general()
    assert changed_window(session) is None  # the general model changes the whole field


def test_the_viewer_files_after_whole_declined_and_native_steps(shifted_cbct, unshifted_cbct, tmp_path):  # noqa: F811
    """Whole images after general; nothing after a declined step; a window after a native one, and the
    whole images rewritten only when asked for."""
    fixed, moving, truth = unshifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu", folder=tmp_path / "a")
    viewer = ViewerFiles()
    whole = viewer.after_step(session, session.general(), native_step=False)
    assert (
        set(whole["files"]) >= {"warped", "difference", "displacement", "jacobian"} and "patch" not in whole
    )
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "current").iterdir()}
    record = session.rso(lung_box(session), RSOSettings(mode="native"))
    assert record.declined
    assert viewer.after_step(session, record, native_step=True) == {"paths": {}, "files": {}}
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "current").iterdir()} == stamps

    fixed, moving, truth = shifted_cbct
    session = session_of(fixed, moving, _untrained(), grid=TEST_GRID, device="cpu", folder=tmp_path / "b")
    viewer.after_step(session, session.general(), native_step=False)
    record = session.rso(lung_box(session), RSOSettings(mode="native"))
    reply = viewer.after_step(session, record, native_step=True)
    assert reply["paths"] == {} and viewer.whole_out_of_date
    assert all(path.endswith(".nrrd") for path in reply["patch"]["paths"].values())
    warped = tmp_path / "b" / "current" / "warped.nii"
    stale = warped.stat().st_mtime_ns
    assert viewer.whole(session)["paths"]["warped"] == str(warped) and warped.stat().st_mtime_ns != stale
    assert not viewer.whole_out_of_date
