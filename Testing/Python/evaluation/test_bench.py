"""The benchmark: the --quick subset end to end on a tiny case and network, and each peer's convention.

The end-to-end run uses a 2-phase case simulated from real anatomy at 6 mm, the tiny network and
a 32x64x64 grid, and a few iterations per step: it checks that every output exists and carries
its fields, not what the numbers are (the full run in bench/README.md is for that). The peers
(itk-elastix, antspyx) are benchmark-only packages: where they are installed, the run includes
them and each wrapper is checked on a pair with a known shift; where not, those parts are skipped.
"""

from __future__ import annotations

import json
import mmap
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rso.cli import EXIT_BAD_INPUT, main
from rso.errors import InputError
from rso.evaluation import case_sets, peers
from rso.evaluation.bench import plan as bench
from rso.evaluation.bench.measure import Measured

# itk's SWIG wrappers raise DeprecationWarnings on import; nothing the project can act on.
pytestmark = pytest.mark.filterwarnings(
    "ignore:builtin type .* has no __module__ attribute:DeprecationWarning"
)

HAVE_ELASTIX, HAVE_ANTS = peers.available("elastix"), peers.available("ants")
# The quick case has projection geometry files, so the no-geometry path (what a user without
# projections gets) and the wrong-geometry path (its moving geometry slightly off) run beside the matched one.
FIXED_ARMS = ("general", "iso_long", "iso_short", "iso_short_no_geometry", "iso_short_wrong_geometry")
RSO_ARMS = (
    "rso_native",
    "rso_native_no_geometry",
    "rso_native_wrong_geometry",
    "rso_native_from_general",
    "rso_direct_local",
    "rso_full_global",
)  # paper: misaligned
WRONG_ARMS = ("iso_short_wrong_geometry", "rso_native_wrong_geometry")
TINY = [
    "--channels",
    "4,8,16,32,64",
    "--grid",
    "32,64,64",
    "--iso-long",
    "4",
    "--iso-short",
    "2",
    "--rso",
    "3",
    "--speed-grid",
    "32,48,48",
    "--speed-box",
    "32",
    "--speed-iterations",
    "2",
    "--speed-precision",
    "fp32",
    "--elastix-iterations",
    "20",
    "--ants-iterations",
    "5,0,0",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory) -> Path:
    """A real-anatomy case (pyradiomics lung1) at 6 mm with two phases: seconds to make."""
    from rso.simulation.cbct import CBCTParams
    from rso.simulation.fetch import fetch_data
    from rso.simulation.simulate import SimulationParams, simulate_case

    params = SimulationParams(spacing_mm=6.0, cbct=CBCTParams(projections=60))
    folder = tmp_path_factory.mktemp("cases") / "tiny"
    return simulate_case(fetch_data()["lung1"], folder, phases=2, seed=5, params=params)


@pytest.fixture(scope="module")
def quick_bench(tiny_case, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The quick run's folder, and per case the moving geometry of its matched and wrong-geometry sessions."""
    from rso.evaluation.bench import arms

    out = tmp_path_factory.mktemp("bench") / "results"
    (out / "figures").mkdir(parents=True)
    (out / "arm_stale_misaligned0_general.json").write_text("{}")  # a previous run's file must not survive
    seen, prepare_case = [], arms.prepare_case

    def watched(*args, **kwargs):
        run = prepare_case(*args, **kwargs)
        moving = {"case": run.inputs["moving_geometry"].geometry, "perturbation": run.perturbation}
        seen.append(moving | {"matched": run.iso_short.geometry[1], "wrong": run.wrong_geometry.geometry[1]})
        return run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arms, "prepare_case", watched)
        assert main(["bench", "--quick", "--out", str(out), "--case-dir", str(tiny_case), *TINY]) == 0
    return out, seen


@pytest.fixture(scope="module")
def quick_run(quick_bench) -> Path:
    return quick_bench[0]


def expected_arms(kind: str) -> set[str]:
    arms = {*FIXED_ARMS, *RSO_ARMS} if kind == "misaligned" else {*FIXED_ARMS, *RSO_ARMS[:-1]}
    if HAVE_ELASTIX:
        arms |= (
            {"elastix_bspline", "elastix_bspline_box_mask"} if kind == "misaligned" else {"elastix_bspline"}
        )
    if HAVE_ANTS:
        arms.add("ants_syn")
    return arms


def test_quick_bench_writes_every_record_with_its_fields(quick_run):
    import torch

    assert torch.get_num_threads() == min(2, os.cpu_count() or 1)  # --threads 1 was for the run only
    records = [json.loads(p.read_text()) for p in sorted(quick_run.glob("arm_*.json"))]
    for kind in ("misaligned", "control"):
        mine = [r for r in records if r["box"]["kind"] == kind]
        assert {r["arm"] for r in mine} == expected_arms(kind) and len(mine) == len(expected_arms(kind)), kind
    for record in records:
        assert record["format"] == bench.RECORD_FORMAT and record["kind"] == "arm"
        assert record["case"]["fixed_phase"] == 0 and record["case"]["moving_phase"] == 1
        assert record["case"]["anatomy"] == "lung1" and record["case"]["training_anatomy"] is True
        assert record["case"]["evaluation_mask"] == "lung_mask.nii.gz" and record["case"]["held_out"] is False
        assert len(record["box"]["ras"]) == 6 and record["box"]["size_mm"] == 40.0
        metrics = record["metrics"]
        for key in ("rmse_hu", "rmse_hu_box", "folding_fraction", "jacobian_min"):
            assert np.isfinite(metrics[key]), key
        for key in ("tre_mm", "tre_mm_box"):
            assert set(metrics[key]) == {"mean", "median", "p95"} and metrics[key]["mean"] > 0
        assert record["seconds"] > 0 and record["peak_memory"]["peak_rss_mb"] > 0
        assert record["machine"]["cpu"] and record["machine"]["logical_cores"] >= 1
        assert record["versions"]["torch"] and record["versions"]["rso-registration"]
        assert (
            record["plan"]["iso_long"] == 4 and record["plan"]["rso"] == 3 and record["grid"] == [32, 64, 64]
        )
        assert record["model"]["config"]["channels"] == [4, 8, 16, 32, 64]
    by_arm = {r["arm"]: r for r in records if r["box"]["kind"] == "misaligned"}
    for arm in ("rso_full_global", "rso_direct_local"):
        assert (
            len(by_arm[arm]["loss"]) == 3
            and by_arm[arm]["latency_seconds"] >= by_arm[arm]["step_seconds"] > 0
        )
    native = by_arm["rso_native"]
    assert native["settings"]["mode"] == "native" and native["guard"]["gain"] is not None
    assert native["latency_seconds"] >= native["step_seconds"] > 0
    assert native["seconds"] > by_arm["iso_short"]["seconds"]  # the pipeline includes general and ISO
    # local composition leaves the field outside box + margin exactly as ISO left it
    assert native["metrics"]["outside_change_mm"] == 0.0
    assert by_arm["rso_direct_local"]["metrics"]["outside_change_mm"] == 0.0
    assert by_arm["rso_full_global"]["metrics"]["outside_change_mm"] >= 0.0
    assert by_arm["iso_long"]["metrics"]["outside_change_mm"] is None
    assert not (quick_run / "arm_stale_misaligned0_general.json").exists()


def test_quick_bench_runs_the_wrong_geometry_path_with_its_perturbation_named(quick_bench):
    """The first case of a plan gets the first perturbation (angles +0.5 deg) on its moving geometry only;
    both wrong-geometry arms name it, and native RSO starts from that path's own ISO-short."""
    out, seen = quick_bench
    (moving,) = seen
    assert moving["perturbation"] == "angles +0.5 deg"
    assert moving["matched"] == moving["case"] and moving["wrong"] != moving["case"]
    turned = np.subtract(moving["wrong"].gantry_deg, moving["case"].gantry_deg) % 360.0
    np.testing.assert_allclose(turned, 0.5, atol=1e-6)
    assert moving["wrong"].source_to_isocenter_mm == moving["case"].source_to_isocenter_mm
    records = [json.loads(p.read_text()) for p in sorted(out.glob("arm_*.json"))]
    for kind in ("misaligned", "control"):
        by_arm = {r["arm"]: r for r in records if r["box"]["kind"] == kind}
        iso, rso = (by_arm[arm] for arm in WRONG_ARMS)
        assert iso["label"] == "ISO-2, wrong geometry (angles +0.5 deg)"
        assert rso["label"].endswith(", wrong geometry (angles +0.5 deg)") and "native" in rso["label"]
        assert iso["settings"]["wrong_geometry"] == rso["settings"]["wrong_geometry"] == "angles +0.5 deg"
        assert rso["settings"]["mode"] == "native" and iso["settings"]["iterations"] == 2
        assert "wrong_geometry" not in by_arm["iso_short"]["settings"]
        assert "wrong_geometry" not in by_arm["rso_native_no_geometry"]["settings"]
        # the path's own ISO-short: it fitted another pair than the matched one's (its guard may still
        # have kept the general model's field on both)
        assert iso["loss"] != by_arm["iso_short"]["loss"]
        assert rso["seconds"] > iso["seconds"]
    assert all(r["plan"]["wrong_geometry"] is True for r in records)


def test_quick_bench_runs_native_rso_from_the_general_model(quick_run):
    """The path without ISO: native RSO on the general model's field, local to its box, and guarded
    against the general model (a declined step is scored on the general model's field)."""
    records = [json.loads(p.read_text()) for p in sorted(quick_run.glob("arm_*.json"))]
    for kind in ("misaligned", "control"):
        by_arm = {r["arm"]: r for r in records if r["box"]["kind"] == kind}
        rso, general = by_arm["rso_native_from_general"], by_arm["general"]
        assert rso["label"].startswith("general model + RSO-") and rso["label"].endswith(" native")
        assert rso["settings"]["mode"] == "native" and rso["metrics"]["outside_change_mm"] == 0.0
        if rso["declined"]:
            assert rso["metrics"]["tre_mm_box"] == general["metrics"]["tre_mm_box"]
    targets = [row["target"] for row in json.loads((quick_run / "summary.json").read_text())["targets"]]
    assert any(
        "from the general model, no ISO: no control or residual box worse than the general" in t
        for t in targets
    )


def test_quick_bench_measures_speed_side_by_side(quick_run):
    speed = [json.loads(p.read_text()) for p in sorted(quick_run.glob("speed_*.json"))]
    assert sorted(r["mode"] for r in speed) == ["crop", "direct", "full", "native"]
    for record in speed:
        assert record["grid"] == [32, 48, 48] and record["box_size_mm"] == 32.0 and record["iterations"] == 2
        assert record["precision"] == "fp32"
        assert record["seconds_per_iteration"] > 0 and record["projected_step_seconds"] > 0
        assert record["projected_latency_seconds"] > record["projected_step_seconds"]
        assert len(record["window_voxels"]) == 3 and record["peak_memory"]["peak_rss_mb"] > 0
        assert record["machine"]["cpu"]


def test_quick_bench_summary_tables_and_figures(quick_run):
    summary = json.loads((quick_run / "summary.json").read_text())
    assert summary["default_arm"] == "rso_native" or summary["default_arm"] in RSO_ARMS
    assert set(summary["by_kind"]) == {"misaligned", "control"}
    misaligned = summary["by_kind"]["misaligned"]
    assert {row["arm"] for row in misaligned["arms"]} == expected_arms("misaligned")
    assert 0.0 <= misaligned["versus"]["rso_native vs iso_long"]["win_fraction"] <= 1.0
    assert {row["mode"] for row in summary["speed"]} == {"native", "full", "crop", "direct"}
    targets = {row["target"]: row for row in summary["targets"]}
    assert any("80 %" in t for t in targets) and any("unchanged" in t for t in targets)
    assert any("control" in t for t in targets) and any("re-warped" in t for t in targets)
    assert all(row["met"] in (True, False) for row in targets.values())
    for path in ("no geometry", "wrong geometry"):  # each path's own guard row
        assert any(f", {path}: no control or residual box worse" in t for t in targets), path
    box_tre = {}  # (arm, case, kind, index) -> box TRE (mm)
    for record in map(json.loads, map(Path.read_text, quick_run.glob("arm_*.json"))):
        box = (record["case"]["name"], record["box"]["kind"], record["box"]["index"])
        box_tre[(record["arm"], *box)] = record["metrics"]["tre_mm_box"]["mean"]
    boxes = [key[1:] for key in box_tre if key[0] == "general"]
    for arm, path in (("iso_short", "default path"), ("iso_short_no_geometry", "no geometry")):
        # ISO against the general model, box by box: the worst change over every box of the run
        worst = max(box_tre[(arm, *box)] - box_tre[("general", *box)] for box in boxes)
        aim = f"all cases, {path} (aim): no box worse under ISO-short than the general model by > 0.5 mm"
        assert targets[aim]["measured"] == pytest.approx(worst), path
    for kind, part in summary["by_kind"].items():
        rows = {row["arm"]: row for row in part["arms"]}
        assert rows["iso_short_wrong_geometry"]["label"] == "ISO-2, wrong geometry (angles +0.5 deg)", kind
        assert rows["rso_native_wrong_geometry"]["n"] == part["boxes"], kind
        assert "rso_native_wrong_geometry vs iso_short" in part["versus"], kind
    markdown = (quick_run / "summary.md").read_text(encoding="utf-8")
    for heading in (
        "## misaligned boxes",
        "## control boxes",
        "# Held-out",
        "## Speed and memory",
        "## Targets",
    ):
        assert heading in markdown
    for row in misaligned["arms"]:
        assert f"| {row['label']} |" in markdown
    for name in ("box_tre_per_arm_misaligned.png", f"case_{summary['cases'][0]}.png"):
        png = (quick_run / "figures" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name


def test_plans_match_the_issue():
    paper, quick = bench.BenchPlan(), bench.BenchPlan.quick()
    assert len(paper.cases) >= 6 and 32 <= paper.box_size_mm <= 64
    assert dict(paper.boxes) == {"misaligned": 2, "residual": 1, "control": 2}
    assert (paper.iso_long, paper.iso_short, paper.rso) == (500, 100, 400)
    for anatomy in ("cxr", "lung1", "lung2"):
        assert len({c.seed for c in paper.cases if c.anatomy == anatomy}) >= 2
    assert {c.preset for c in paper.cases} == {"xvi", "truebeam"}  # clinical cone-beam 4D CBCT (RTK)
    assert {c.preset for c in case_sets.PARALLEL_CASES} == {"local", "clinical"}  # last round's, kept
    # seeds the bundled model was trained on are never benchmarked
    assert not any(
        c.anatomy in bench.TRAINING_ANATOMY and c.seed in bench.TRAINING_SEEDS for c in paper.cases
    )
    assert len(paper.speed_grids) == 2 and len(paper.speed_box_sizes_mm) == 2
    assert set(paper.speed_precisions) == {"fp32", "bf16"}
    assert len(quick.cases) == 1 and sum(n for _, n in quick.boxes) == 2 and quick.rso < paper.rso
    assert max(np.prod(g) for g in quick.speed_grids) < max(np.prod(g) for g in paper.speed_grids)


def test_a_case_is_benchmarked_with_its_geometry_files_fdk_or_tv(tmp_path):
    """A user with the scan gives the geometry files whichever the reconstruction: an FDK case's are
    matched, a TV case's describe the scan (rso.core.projection.scan); a case without files has none."""
    from rso.core.projection import ProjectionGeometry, write_geometry
    from rso.evaluation.bench.cases import _geometries
    from rso.simulation.simulate import geometry_name

    geometry = ProjectionGeometry.circular(1000.0, 1500.0, np.linspace(0.0, 350.0, 8))
    for kind in ("fdk", "tv"):
        for phase in (0, 3):
            write_geometry(geometry, tmp_path / kind / geometry_name(phase), reconstruction=kind)
        expected = tuple(tmp_path / kind / geometry_name(k) for k in (0, 3))
        assert _geometries(tmp_path / kind, (0, 3)) == expected
    assert _geometries(tmp_path / "fdk", (0, 5)) == (None, None)


def test_every_path_can_fit_inside_the_scans_field_of_view(tiny_case, tmp_path, capsys):
    """``--fit-field-of-view``: each path's session gets the case's fov_mask.nii.gz as its fit mask; a case
    without one is a one-line error before anything runs."""
    import shutil
    from dataclasses import replace

    from rso.core.projection import FOV_MASK
    from rso.evaluation.bench.cases import resolve_cases

    out = tmp_path / "out"
    args = ["bench", "--quick", "--out", str(out), "--case-dir", str(tiny_case), "--fit-field-of-view"]
    with pytest.raises(SystemExit) as exited:
        main([*args, *TINY])
    assert exited.value.code == EXIT_BAD_INPUT and not out.exists()
    assert "has no fov_mask.nii.gz" in capsys.readouterr().err

    case = shutil.copytree(tiny_case, tmp_path / "case")
    ct = sitk.ReadImage(str(case / "ct_phase0.nii.gz"))
    seen = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    seen.CopyInformation(ct)
    seen[:, :, 2:-2] = 1  # the scanner saw all but two slices at each end
    sitk.WriteImage(seen, str(case / FOV_MASK))
    plan = replace(bench.BenchPlan.quick(), case_dirs=(str(case),), fit_mask=FOV_MASK)
    (resolved,) = resolve_cases(plan)
    fit = resolved.inputs()["fit_mask"]
    assert resolved.to_dict()["fit_mask"] == FOV_MASK
    assert sitk.GetArrayFromImage(fit).sum() == sitk.GetArrayFromImage(seen).sum()


@pytest.mark.parametrize("reset", [True, False])
def test_peak_memory_is_measured_per_block(monkeypatch, reset):
    if not reset:  # where the kernel's peak cannot be reset, a thread samples the RSS instead
        monkeypatch.setattr("rso.evaluation.bench.measure._reset_peak_rss", lambda: False)
    with Measured() as big:
        # 64 MiB of fresh pages, touched: a malloc'd array could reuse memory that is resident already
        # (an allocator keeps what earlier tests freed), and then the peak would not move.
        block = mmap.mmap(-1, 64 * 2**20)
        pages = np.frombuffer(block, np.uint8)
        pages[::4096] = 1
        time.sleep(0.05)  # a few samples for the sampling thread
        del pages
        block.close()
    with Measured() as small:
        pass
    assert big.seconds > 0 and big.memory["peak_rss_mb"] >= big.memory["rss_before_mb"] + 50
    assert small.memory["peak_rss_mb"] < big.memory["peak_rss_mb"] - 30
    assert ("VmHWM" in big.memory["method"]) == reset


def test_missing_peer_package_is_a_clear_error():
    with pytest.raises(InputError, match="install the bench extra"):
        peers.require("rso_no_such_module", "no-such-package")


# ------------------------------------------------------------------ the peers' field convention
SHIFT_MM = np.array([4.0, 0.0, -3.0])  # LPS


@pytest.fixture(scope="module")
def shifted_pair():
    """fixed(p) = moving(p + u) for a constant u, both drawn analytically on a y-flipped grid: u is
    fixed -> moving."""
    shape, spacing, origin = (24, 28, 32), 3.0, np.array([5.0, 7.0, -3.0])
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points = np.stack(
        [origin[0] + spacing * i, origin[1] - spacing * j, origin[2] + spacing * k], axis=-1
    )  # LPS
    rng = np.random.default_rng(1)
    blobs = [
        (
            rng.uniform(0.15, 0.85, 3) * (np.array(shape[::-1]) * spacing) * [1, -1, 1] + origin,
            rng.uniform(6, 12),
            rng.choice([-600, 600]),
        )
        for _ in range(12)
    ]

    def draw(at: np.ndarray) -> sitk.Image:  # smooth blobs of both signs: structure for every metric
        values = sum(v * np.exp(-np.sum((at - c) ** 2, axis=-1) / (2 * r**2)) for c, r, v in blobs)
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.SetSpacing((spacing,) * 3)
        image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
        image.SetOrigin(origin.tolist())
        return image

    return draw(points + SHIFT_MM), draw(points)


def central_displacement(field: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """Median displacement (LPS mm) in the middle third of the image, where the shift is seen."""
    assert field.GetSize() == reference.GetSize()
    np.testing.assert_allclose(field.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    vectors = sitk.GetArrayFromImage(field)
    centre = tuple(slice(n // 3, 2 * n // 3) for n in vectors.shape[:3])
    return np.median(vectors[centre].reshape(-1, 3), axis=0)


def assert_recovers_shift(displacement: np.ndarray) -> None:
    # Projected on the true shift: about 1 when right, negative if the direction were inverted.
    along = float(displacement @ SHIFT_MM / (SHIFT_MM @ SHIFT_MM))
    assert 0.6 < along < 1.3, displacement
    assert abs(displacement[1]) < 1.0, displacement


@pytest.mark.skipif(not HAVE_ELASTIX, reason="itk-elastix is not installed (requirements-bench.txt)")
def test_elastix_field_maps_fixed_points_to_moving_points(shifted_pair, tmp_path, monkeypatch):
    fixed, moving = shifted_pair
    monkeypatch.chdir(tmp_path)
    settings = peers.ElastixSettings(resolutions=2, final_grid_spacing_mm=20.0, iterations=150)
    result = peers.elastix_bspline(fixed, moving, settings)
    assert_recovers_shift(central_displacement(result.field, fixed))
    assert result.seconds > 0 and result.settings["masked"] is False
    assert not any(tmp_path.iterdir())  # transformix writes its field file elsewhere, not into the cwd


@pytest.mark.skipif(not HAVE_ELASTIX, reason="itk-elastix is not installed (requirements-bench.txt)")
def test_elastix_box_mask_restricts_the_fit_to_the_box(shifted_pair):
    from rso.core.boxes import box_from_lps
    from rso.core.geometry import ModelGrid

    fixed, moving = shifted_pair
    centre = np.array(fixed.TransformContinuousIndexToPhysicalPoint([15.5, 13.5, 11.5]))
    box = box_from_lps(ModelGrid.covering(fixed, (16, 16, 16)), centre - 20, centre + 20)
    mask = sitk.GetArrayFromImage(peers.box_mask(fixed, box)).astype(bool)
    assert 0 < mask.sum() < mask.size
    settings = peers.ElastixSettings(resolutions=2, final_grid_spacing_mm=20.0, iterations=150)
    result = peers.elastix_bspline(fixed, moving, settings, box=box)
    inside = sitk.GetArrayFromImage(result.field)[mask]
    assert_recovers_shift(np.median(inside, axis=0))
    assert result.settings["masked"] is True


@pytest.mark.skipif(not HAVE_ANTS, reason="antspyx is not installed (requirements-bench.txt)")
def test_ants_syn_field_maps_fixed_points_to_moving_points(shifted_pair):
    fixed, moving = shifted_pair
    result = peers.ants_syn(fixed, moving, peers.AntsSettings(reg_iterations=(20, 10, 0)))
    assert_recovers_shift(central_displacement(result.field, fixed))


@pytest.mark.skipif(not HAVE_ELASTIX, reason="itk-elastix is not installed (requirements-bench.txt)")
def test_a_peer_runs_in_a_process_of_its_own(shifted_pair):
    """The benchmark's peer process: the same field as a call in this process, its seconds and peak
    memory measured there, and the process stopped on leaving."""
    from rso.evaluation.bench.peer_process import PeerProcess

    fixed, moving = shifted_pair
    settings = peers.ElastixSettings(resolutions=2, final_grid_spacing_mm=20.0, iterations=150)
    with PeerProcess() as process:
        result, cost = process.run("elastix", fixed, moving, settings)
        pool = process._pool
    assert_recovers_shift(central_displacement(result.field, fixed))
    assert cost.seconds > 0 and cost.memory["peak_rss_mb"] > 0
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(print)  # the process was stopped on leaving


@pytest.mark.skipif(HAVE_ELASTIX, reason="checks the error of a missing peer package")
def test_a_missing_peer_package_is_the_same_clear_error_from_the_peer_process(shifted_pair):
    from rso.evaluation.bench.peer_process import PeerProcess

    fixed, moving = shifted_pair
    with PeerProcess() as process, pytest.raises(InputError, match="install the bench extra"):
        process.run("elastix", fixed, moving, peers.ElastixSettings())
