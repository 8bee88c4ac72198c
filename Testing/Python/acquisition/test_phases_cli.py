"""``rso-registration phases`` end to end on a small synthetic 4D scan with known breathing.

The scan: a 128 mm phantom (lung above a diaphragm that descends 16 mm on inhale, soft tissue below, in a
water shell) projected with RTK's Joseph projector through a 360-degree, 150-view circular geometry while
it breathes (one breath every 15 views), written as an MHA stack of line integrals with its RTK geometry
and the breathing phase of every view. The command must sort the views as the signal says, reconstruct one
image per phase with its geometry file, and the images must show the diaphragm where it was; without a
signal file, the Amsterdam shroud of the projections must find the breathing itself.

RTK's import (~20-40 s) and the scan (~2 s) are made once per module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from rso.cli import EXIT_BAD_INPUT, main
from rso.cli.phases import tv_advice
from rso.core.projection.geometry import phase_reconstruction
from rso.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute")

VIEWS, PERIOD, PHASES = 150, 15, 5  # views, views per breath, phases reconstructed
N, SPACING = 32, 4.0  # the phantom: 32^3 voxels of 4 mm
DIAPHRAGM_MM, DESCENT_MM = 10.0, 16.0  # the diaphragm's height (LPS S) at end exhale, its descent on inhale


def breath_phase() -> np.ndarray:
    """(VIEWS,) the cycle fraction of every view: 0 = end exhale, 0.5 = end inhale."""
    return np.round((np.arange(VIEWS) / PERIOD + 0.1) % 1.0, 6)


def amplitude(t) -> np.ndarray:
    return np.sin(np.pi * np.asarray(t)) ** 4


def phantom(t: float) -> sitk.Image:
    """The LPS phantom (HU) at cycle fraction t: 128 mm cube, z = superior."""
    axis = (np.arange(N) - (N - 1) / 2) * SPACING
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    radius = np.hypot(x, y)
    hu = np.full((N, N, N), -1000.0, dtype=np.float32)
    hu[radius < 56] = 0.0
    # lung above the diaphragm, tissue below, partial volume across one voxel: the edge moves smoothly
    lung = np.clip((z - DIAPHRAGM_MM + DESCENT_MM * amplitude(t)) / SPACING + 0.5, 0.0, 1.0)
    hu[radius < 40] = (40.0 - 840.0 * lung)[radius < 40]
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing([SPACING] * 3)
    image.SetOrigin([-(N - 1) / 2 * SPACING] * 3)
    return image


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A folder with stack.mha (line integrals), geometry.xml and signal.txt (one phase per view)."""
    from rso.core.projection import (
        Detector,
        Placement,
        ProjectionGeometry,
        forward_project,
        hu_to_mu,
        write_geometry,
    )

    folder = tmp_path_factory.mktemp("scan")
    geometry = ProjectionGeometry.circular(1000.0, 1500.0, np.arange(VIEWS) * 360.0 / VIEWS)
    detector = Detector.centred((48, 24), (6.0, 6.0))  # 96 mm along the axis: the ends stay outside
    t = breath_phase()
    stack = np.zeros((VIEWS, 24, 48), dtype=np.float32)
    for state in np.unique(t):  # the phantom breathes: project each state through its own views
        views = np.flatnonzero(t == state)
        mu = hu_to_mu(Placement.default().to_rtk(phantom(state)))
        stack[views] = forward_project(mu, geometry.subset(views), detector)
    image = sitk.GetImageFromArray(stack)
    image.SetSpacing((6.0, 6.0, 1.0))
    image.SetOrigin((*detector.origin_mm, 0.0))
    sitk.WriteImage(image, str(folder / "stack.mha"))
    write_geometry(geometry, folder / "geometry.xml")
    np.savetxt(folder / "signal.txt", t, fmt="%.6f")
    return folder


def run(*args) -> int:
    return main(["phases", "--quiet", *map(str, args)])


def diaphragm_mm(path) -> float:
    """The height (LPS S, mm) where the central column's mean HU crosses halfway from tissue to lung."""
    image = sitk.ReadImage(str(path))
    hu = sitk.GetArrayFromImage(image)  # (k, j, i)
    centre = np.array(hu.shape) // 2
    profile = hu[:, centre[1] - 4 : centre[1] + 4, centre[2] - 4 : centre[2] + 4].mean(axis=(1, 2))
    heights = np.array([image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(hu.shape[0])])
    inside = np.abs(heights) < 36  # inside the axial field of view (+-46 mm)
    profile, heights = profile[inside], heights[inside]
    k = int(np.flatnonzero((profile[:-1] > -380) & (profile[1:] <= -380))[0])
    return float(np.interp(-380, [profile[k + 1], profile[k]], [heights[k + 1], heights[k]]))


def test_phases_from_a_signal_file(scan, tmp_path):
    from rso.core.projection import read_geometry

    out = tmp_path / "phases"
    assert (
        run(
            "--projections",
            scan / "stack.mha",
            "--signal",
            scan / "signal.txt",
            "--phases",
            PHASES,
            "--spacing",
            SPACING,
            "--size",
            "32,32,32",
            "--out",
            out,
        )
        == 0
    )
    summary = json.loads((out / "phases.json").read_text())
    expected = {f"cbct_phase{k}{suffix}" for k in range(PHASES) for suffix in (".nii.gz", "_geometry.xml")}
    assert {p.name for p in out.iterdir()} == expected | {
        "phases.json",
        "phase_signal.txt",
        "fov_mask.nii.gz",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["phases"]  # built aside, renamed whole
    bins = np.floor(breath_phase() * PHASES + 0.5).astype(int) % PHASES
    gantry = np.arange(VIEWS) * 360.0 / VIEWS
    for k, row in enumerate(summary["phases"]):
        views = np.flatnonzero(bins == k)
        assert row["views"] == views.size and row["clusters"] == VIEWS // PERIOD  # one cluster per breath
        assert row["arc_deg"] > 300  # a phase of a full scan covers the circle, in clusters
        geometry = read_geometry(out / row["geometry"])
        np.testing.assert_allclose(geometry.gantry_deg, gantry[views], atol=1e-6)
        image = sitk.ReadImage(str(out / row["image"]))
        assert image.GetSize() == (N, N, N) and image.GetSpacing() == (SPACING,) * 3
    assert summary["geometry"]["kind"] == "rtk" and summary["signal"]["kind"] == "phase"
    # what the scanner saw: the panel reaches +-46 mm along the axis, the grid +-62 mm
    fov = sitk.ReadImage(str(out / "fov_mask.nii.gz"))
    assert fov.GetSize() == image.GetSize() and fov.GetOrigin() == image.GetOrigin()
    seen = sitk.GetArrayFromImage(fov)  # (k, j, i)
    heights = np.array([fov.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(N)])
    centre = seen[:, N // 2, N // 2]
    assert centre[np.abs(heights) < 40].all() and not centre[np.abs(heights) > 50].any()
    assert summary["field_of_view"] == {"mask": "fov_mask.nii.gz", "share_of_grid": round(seen.mean(), 4)}
    np.testing.assert_allclose(np.loadtxt(out / "phase_signal.txt"), breath_phase(), atol=1e-6)
    # the diaphragm where it was: high at end exhale (phase 0), 16 x amplitude lower towards end inhale
    exhale, inhale = diaphragm_mm(out / "cbct_phase0.nii.gz"), diaphragm_mm(out / "cbct_phase2.nii.gz")
    bin_amplitude = amplitude(breath_phase()[bins == 2]).mean()
    assert exhale == pytest.approx(DIAPHRAGM_MM, abs=1.5)  # measured: within 0.2 mm
    assert exhale - inhale == pytest.approx(DESCENT_MM * bin_amplitude, abs=1.5)  # within 0.8 mm


def test_phases_from_the_projections_amsterdam_shroud(scan, tmp_path):
    out = tmp_path / "shroud"
    assert run("--projections", scan / "stack.mha", "--phases", PHASES, "--spacing", 8, "--out", out) == 0
    summary = json.loads((out / "phases.json").read_text())
    assert summary["signal"]["source"] == "amsterdam-shroud"
    found = np.floor(np.loadtxt(out / "phase_signal.txt") * PHASES + 0.5).astype(int) % PHASES
    truth = np.floor(breath_phase() * PHASES + 0.5).astype(int) % PHASES
    off = np.minimum((found - truth) % PHASES, (truth - found) % PHASES)
    assert (off == 0).mean() > 0.8 and off.max() <= 1  # measured: phases within 0.03 of a cycle
    # the default grid: the field of view (radius 94 mm at the isocentre, 92 mm long) at 8 mm
    assert summary["grid"]["spacing_mm"] == [8.0] * 3 and summary["grid"]["size"] == [24, 24, 12]


def test_tv_reconstruction_keeps_the_diaphragm_with_fewer_streaks(scan, tmp_path, capsys):
    """--reconstruction tv: the phases of the same sorting, the diaphragm where FDK puts it, and nearer
    the phantom at end exhale (its 30 views in 10 clusters streak under FDK)."""
    args = ("--projections", scan / "stack.mha", "--signal", scan / "signal.txt", "--phases", PHASES)
    grid = ("--spacing", SPACING, "--size", f"{N},{N},{N}")
    assert run(*args, *grid, "--out", tmp_path / "fdk") == 0
    assert run(*args, *grid, "--reconstruction", "tv", "--out", tmp_path / "tv") == 0
    printed = capsys.readouterr().out
    assert "with their geometry files" in printed and "half fan" not in printed
    summaries = {kind: json.loads((tmp_path / kind / "phases.json").read_text()) for kind in ("fdk", "tv")}
    assert summaries["tv"]["reconstruction"] == "tv" and summaries["tv"]["hann_cut"] is None
    assert summaries["tv"]["phases"] == summaries["fdk"]["phases"]
    geometry = {kind: tmp_path / kind / "cbct_phase0_geometry.xml" for kind in ("fdk", "tv")}
    assert {kind: phase_reconstruction(path) for kind, path in geometry.items()} == {"fdk": "fdk", "tv": "tv"}
    fdk, tv = (tmp_path / kind / "cbct_phase0.nii.gz" for kind in ("fdk", "tv"))
    # register refuses an FDK phase's geometry with a TV phase's (reconstructed unlike), writing nothing
    pair = ["--fixed", tv, "--moving", tv.with_name("cbct_phase1.nii.gz"), "--out", tmp_path / "result"]
    views = ["--fixed-geometry", geometry["fdk"], "--moving-geometry", geometry["tv"]]
    with pytest.raises(SystemExit) as refused:
        main(["register", "--quiet", *map(str, pair + views)])
    assert refused.value.code == EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert "reconstructed by FDK and the moving one by TV" in error and "\n" not in error
    assert not (tmp_path / "result").exists()
    assert diaphragm_mm(tv) == pytest.approx(diaphragm_mm(fdk), abs=1.0)
    truth = sitk.GetArrayFromImage(phantom(0.0))
    inside = truth > -900
    error = {
        path.parent.name: np.sqrt(
            np.mean((sitk.GetArrayFromImage(sitk.ReadImage(str(path))) - truth)[inside] ** 2)
        )
        for path in (fdk, tv)
    }
    assert error["tv"] < 0.8 * error["fdk"], error


def test_reference_grid_and_overwrite(scan, tmp_path):
    out, reference = tmp_path / "out", tmp_path / "reference.nii.gz"
    grid = sitk.GetImageFromArray(
        np.random.default_rng(1).uniform(-1000, 100, (10, 18, 20)).astype(np.float32)
    )
    grid.SetSpacing((5.0, 5.5, 6.0))
    grid.SetOrigin((-40.0, -50.0, -30.0))
    sitk.WriteImage(grid, str(reference))
    args = ("--projections", scan / "stack.mha", "--signal", scan / "signal.txt", "--phases", 2, "--out", out)
    assert run(*args, "--size", "8,8,8", "--spacing", 16) == 0
    assert run(*args, "--reference", reference, "--overwrite") == 0
    image = sitk.ReadImage(str(out / "cbct_phase1.nii.gz"))
    assert image.GetSize() == grid.GetSize() and image.GetOrigin() == grid.GetOrigin()
    assert image.GetSpacing() == grid.GetSpacing()
    assert json.loads((out / "phases.json").read_text())["grid"]["reference"] == str(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "reference.nii.gz"]  # the old one removed


@pytest.mark.parametrize(
    "case, message",
    [
        ("short_signal", "has 149 values but there are 150 projections"),
        ("amplitude_as_phase", "phases must lie in"),
        ("exists", "already exists"),
        ("two_geometries", "several geometry files"),
        ("unknown_format", "no projections RTK can read"),
        ("too_many_phases", "use fewer --phases"),
        ("hann_with_tv", "--hann is FDK's ramp filter"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(case, message, scan, tmp_path, capsys):
    out, signal, projections, extra = tmp_path / "out", scan / "signal.txt", scan / "stack.mha", []
    if case == "short_signal":
        signal = tmp_path / "short.txt"
        np.savetxt(signal, breath_phase()[:-1])
    elif case == "amplitude_as_phase":
        signal = tmp_path / "amplitude.txt"
        np.savetxt(signal, 12.0 * amplitude(breath_phase()))
    elif case == "exists":
        out.mkdir()
    elif case == "two_geometries":
        projections = tmp_path / "scan"
        projections.mkdir()
        for name in ("stack.mha", "geometry.xml"):
            (projections / name).write_bytes((scan / name).read_bytes())
        (projections / "copy.xml").write_bytes((scan / "geometry.xml").read_bytes())
    elif case == "unknown_format":
        projections = tmp_path / "empty"
        projections.mkdir()
        (projections / "notes.dat").write_text("no projections here")
        extra = ["--geometry", scan / "geometry.xml"]
    elif case == "too_many_phases":
        extra = ["--phases", 100]
    elif case == "hann_with_tv":
        extra = ["--reconstruction", "tv", "--hann", 0.5]
    with pytest.raises(SystemExit) as exit_info:
        run("--projections", projections, "--signal", signal, "--out", out, *extra)
    assert exit_info.value.code == EXIT_BAD_INPUT
    errors = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("rso-registration: error:")
    ]
    assert len(errors) == 1 and message in errors[0]
    assert not any(p.name.startswith((".out", "out")) and p.name != "out" for p in tmp_path.iterdir())
    assert case == "exists" or not out.exists()


def test_amplitude_signal_to_phase_as_rtk_does():
    from rso.acquisition.signal import phase_of

    t = np.arange(300)
    truth = (t / 23.0 + 0.3) % 1.0
    signal = 5.0 * amplitude(truth) + 0.02 * np.random.default_rng(0).normal(size=t.size)
    error = np.abs((phase_of(signal) - truth + 0.5) % 1.0 - 0.5)
    assert np.median(error) < 0.05 and error.max() < 0.2  # phase 0 at the minima: end exhale
    with pytest.raises(InputError, match="too short or flat"):
        phase_of(np.ones(50))


def test_tv_advice_says_what_native_rso_does_on_a_half_fan():
    assert "native RSO declines box steps" in tv_advice(True).splitlines()[1]
    assert len(tv_advice(False).splitlines()) == 1
