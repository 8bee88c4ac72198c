"""The scan's rule (rso.core.projection.scan): what a pair's RTK geometry files say about the scan decides
artefact matching and, for TV phases, the guarded ISO (the field stays) and native RSO: declined on a half
fan, no second opinion on a full fan (docs/decisions.md, "Native RSO on half-fan TV phases", "ISO on TV
phases")."""

from __future__ import annotations

import numpy as np
import pytest
from test_native import lung_box, native_session, shifted_cbct, unshifted_cbct  # noqa: F401 (fixtures)

from rso.core.projection.geometry import ProjectionGeometry, write_geometry
from rso.core.projection.matching import matching_status
from rso.core.projection.scan import (
    HALF_FAN_FDK_NOTE,
    HALF_FAN_TV_DECLINE,
    TV_ISO_DECLINE,
    PhaseScan,
    ScanPair,
)
from rso.core.session import RegistrationSession
from rso.errors import InputError
from rso.settings import ISOSettings, RSOSettings

HALF_FAN_TV = (
    "the phases are TV reconstructions of a half-fan scan "
    "(ISO keeps the field; native RSO declines box steps)"
)
FULL_FAN_TV = "the phases are TV reconstructions of a full-fan scan (ISO keeps the field; no second opinion)"


def clustered(half_fan: bool) -> ProjectionGeometry:
    """12 clusters of 3 views, one per breath; a TrueBeam-like half fan or an XVI-like full fan."""
    angles = (np.arange(12)[:, None] * 30.0 + np.arange(3)[None, :]).ravel()
    if half_fan:
        return ProjectionGeometry.circular(1000.0, 1500.0, angles, offset_x=160.0)
    return ProjectionGeometry.circular(1000.0, 1536.0, angles)


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory) -> dict[tuple[str, str], str]:
    """(fan, reconstruction) -> an RTK geometry file, as `phases` and `simulate` write them."""
    folder = tmp_path_factory.mktemp("scans")
    return {
        (fan, kind): str(write_geometry(clustered(fan == "half"), folder / f"{fan}_{kind}.xml", kind))
        for fan in ("half", "full")
        for kind in ("fdk", "tv")
    }


def pair_of(scan_files, fan: str, kind: str) -> ScanPair:
    scan = PhaseScan.read(scan_files[fan, kind])
    return ScanPair.of(scan, scan)


def test_the_geometry_files_say_what_the_steps_may_do(scan_files):
    half_tv, full_tv = pair_of(scan_files, "half", "tv"), pair_of(scan_files, "full", "tv")
    half_fdk = pair_of(scan_files, "half", "fdk")
    assert half_fdk.matchable and not half_tv.matchable and not full_tv.matchable
    assert half_tv.is_half_fan and not full_tv.is_half_fan
    assert (half_tv.native_rso_decline(), half_tv.wants_second_opinion()) == (HALF_FAN_TV_DECLINE, True)
    assert (full_tv.native_rso_decline(), full_tv.wants_second_opinion()) == (None, False)
    assert (half_fdk.native_rso_decline(), half_fdk.wants_second_opinion()) == (None, True)
    assert half_tv.iso_decline() == full_tv.iso_decline() == TV_ISO_DECLINE and half_fdk.iso_decline() is None
    assert half_fdk.decline_note() == HALF_FAN_FDK_NOTE
    assert half_tv.decline_note() == full_tv.decline_note() == ""
    assert pair_of(scan_files, "full", "fdk").decline_note() == ""
    assert matching_status(half_tv, True) == f"artefact matching off: {HALF_FAN_TV}"
    assert matching_status(full_tv, False) == f"artefact matching off: {FULL_FAN_TV}"
    assert matching_status(half_fdk, True) == "artefact matching on: cone beam, 36 and 36 views"
    assert ScanPair.of(None, None) is None


@pytest.mark.parametrize(
    "given, message",
    [
        (("half", "fdk", "half", "tv"), "the fixed phase was reconstructed by FDK and the moving one by TV"),
        (("half", "tv", None, None), "give the geometry of both images, or of neither"),
    ],
)
def test_a_pair_the_rule_cannot_read_is_refused_in_one_line(scan_files, given, message):
    fixed = PhaseScan.read(scan_files[given[0], given[1]])
    moving = PhaseScan.read(scan_files[given[2], given[3]]) if given[2] else None
    with pytest.raises(InputError, match=message) as caught:
        ScanPair.of(fixed, moving)
    assert "\n" not in str(caught.value)


def tv_session(shifted_cbct, scan_files, fan: str | None, **keywords) -> RegistrationSession:  # noqa: F811
    """The shifted CBCT pair (native RSO without geometry keeps the shift) with TV phases' geometry files
    (``fan`` None: without them)."""
    scan = PhaseScan.read(scan_files[fan, "tv"]) if fan else None
    return native_session(shifted_cbct, fixed_geometry=scan, moving_geometry=scan, **keywords)


def test_native_rso_declines_on_half_fan_tv_phases_unless_the_rule_is_off(
    shifted_cbct,  # noqa: F811
    scan_files,
    tmp_path,
):
    """The step is declined at once, with the rule's line, and the session stays as it was; with the rule
    off it runs as it does without the files, bit for bit. A reopened session keeps the scan and its rule."""
    session = tv_session(shifted_cbct, scan_files, "half", folder=tmp_path / "session")
    assert session.pair.matching_status(True) == f"artefact matching off: {HALF_FAN_TV}"
    assert session.geometry is None  # nothing to match
    box = lung_box(session)
    before = session.metrics(box=box)["tre_mm_box"]["mean"]
    record = session.rso(box, RSOSettings(returns=False))
    assert record.declined == HALF_FAN_TV_DECLINE and record.loss == [] and record.guard is None
    assert record.params["scan"] == HALF_FAN_TV and not session.history
    reopened = RegistrationSession.open(tmp_path / "session", device="cpu")
    assert reopened.pair.scans == session.pair.scans
    assert reopened.rso(box, RSOSettings(returns=False)).declined == HALF_FAN_TV_DECLINE
    kept = session.rso(box, RSOSettings(returns=False, scan_rule=False))
    assert kept.accepted and kept.guard["disagreement_mm"] is not None and "scan" not in kept.params
    assert kept.metrics["tre_mm_box"]["mean"] < 0.5 * before
    without_files = tv_session(shifted_cbct, scan_files, None)
    assert without_files.rso(box, RSOSettings(returns=False)).loss == kept.loss
    assert np.array_equal(without_files.field_voxels, session.field_voxels)


def test_a_declined_step_on_half_fan_fdk_phases_says_why(
    unshifted_cbct,  # noqa: F811
    scan_files,
):
    """Matched FDK phases of a half fan: the guard's reason, then the scan's (the streaks hide the motion
    in most boxes); the session stays as it was."""
    scan = PhaseScan.read(scan_files["half", "fdk"])
    session = native_session(unshifted_cbct, fixed_geometry=scan, moving_geometry=scan)
    record = session.rso(lung_box(session), RSOSettings(returns=False))
    reason = record.declined.removesuffix(HALF_FAN_FDK_NOTE)  # the guard's own reason comes first
    assert record.params["artefacts_matched"] and reason and reason != record.declined
    assert "\n" not in record.declined and not session.history


def test_full_fan_tv_phases_are_refined_without_a_second_opinion(shifted_cbct, scan_files):  # noqa: F811
    session = tv_session(shifted_cbct, scan_files, "full")
    steps = []
    record = session.rso(
        lung_box(session), RSOSettings(returns=False), progress=lambda update: steps.append(update.step)
    )
    assert record.accepted and record.guard["disagreement_mm"] is None and "rso check" not in steps
    assert record.params["max_disagreement_mm"] == 0.0 and record.params["scan"] == FULL_FAN_TV


def test_the_guarded_iso_keeps_the_field_on_tv_phases_without_fitting(shifted_cbct, scan_files):  # noqa: F811
    """On either fan's TV phases ISO does not fit (no loss), keeps the start's field and says why; with its
    guard off it fits them as before, and without the files the axis share judges it."""
    for fan in ("half", "full"):
        session = tv_session(shifted_cbct, scan_files, fan)
        before = session.field_voxels.copy()
        record = session.iso(ISOSettings(iterations=3))
        assert record.loss == [] and record.params["kept"] == "start"
        assert record.params["why"] == TV_ISO_DECLINE
        assert np.array_equal(session.field_voxels, before)
    fitted = tv_session(shifted_cbct, scan_files, "half").iso(ISOSettings(iterations=3, guard=False))
    assert len(fitted.loss) == 3 and "why" not in fitted.params
    without_files = tv_session(shifted_cbct, scan_files, None).iso(ISOSettings(iterations=3))
    assert len(without_files.loss) == 3 and "why" not in without_files.params
