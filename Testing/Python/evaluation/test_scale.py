"""The scale benchmark end to end on a tiny synthetic pair: the record's structure, never its timings.

The pair is the analytic phantom (rso.simulation.phantom, no data needed) and the same phantom
shifted by a known 6 mm, at 4 mm voxels; the network is the untrained tiny one on a 16x32x32 grid.
Two spacings, one precision, one ISO iteration: two fresh processes, well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rso.core.geometry import lps_to_ras
from rso.evaluation.bench.scale import STAGES, ScaleCase, ScalePlan, run_scale
from rso.settings import EngineSettings

SHIFT_LPS_MM = (6.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def shifted_case(tmp_path_factory) -> ScaleCase:
    """fixed(p) = moving(p + shift): the truth is the constant shift (LPS mm, fixed -> moving)."""
    from rso.simulation.phantom import NODULE_LPS, phantom_pair

    folder = tmp_path_factory.mktemp("scale_case")
    moving = phantom_pair(shape=(32, 40, 48), spacing_mm=4.0).moving
    fixed = sitk.Resample(
        moving, moving, sitk.TranslationTransform(3, SHIFT_LPS_MM), sitk.sitkLinear, -1000.0
    )
    truth = sitk.GetImageFromArray(
        np.broadcast_to(np.array(SHIFT_LPS_MM), (*moving.GetSize()[::-1], 3)).copy(), isVector=True
    )
    truth.CopyInformation(moving)
    paths = {name: folder / f"{name}.nii.gz" for name in ("fixed", "moving", "truth")}
    for name, image in zip(paths, (fixed, moving, truth)):
        sitk.WriteImage(image, str(paths[name]))
    centre = tuple(float(v) for v in lps_to_ras(NODULE_LPS))
    return ScaleCase(
        fixed=str(paths["fixed"]),
        moving=str(paths["moving"]),
        box_centre_ras=centre,
        box_size_mm=32.0,
        name="shifted-phantom",
    )


def test_scale_record(shifted_case, tmp_path: Path):
    plan = ScalePlan(
        spacings=(3.0, 4.0),
        iso=1,
        precisions=("fp32",),
        engine=EngineSettings(channels=(4, 8, 16, 32, 64), grid=(16, 32, 32), device="cpu"),
        threads=1,
    )
    record = run_scale(shifted_case, tmp_path, plan)

    assert json.loads((tmp_path / "scale.json").read_text()) == record
    assert record["kind"] == "scale" and record["stages"] == list(STAGES)
    assert record["machine"]["cpu"] and record["machine"]["logical_cores"] >= 1
    assert record["machine"]["torch_threads"] == 1
    runs = record["runs"]
    assert [(r["spacing_mm"], r["precision"]) for r in runs] == [(4.0, "fp32"), (3.0, "fp32")]
    for run in runs:
        assert "error" not in run, run
        assert run["arithmetic"] == "fp32" and run["grid"] == [16, 32, 32]
        assert set(run["stages"]) == set(STAGES)
        for name, stage in run["stages"].items():
            assert stage["seconds"] > 0, name
            assert stage["peak_rss_bytes"] > 0, name
            # Every stage but start (reading) writes: inputs, states, the viewer's files, the results.
            assert (stage["bytes_written"] > 0) == (name != "start"), name
        peaks = [run["stages"][name]["peak_rss_bytes"] for name in STAGES]
        assert peaks == sorted(peaks)  # the process's peak so far never falls
        assert run["rso"]["declined"] is None  # a 6 mm shift in the box: the step is kept
        window = run["overlay_window"]  # the viewer's window after it: a block of the fixed grid
        assert window and np.prod([b - a for a, b in window]) < run["voxels"]
        assert run["box_to_overlay_seconds"] == pytest.approx(
            run["stages"]["rso"]["seconds"] + run["stages"]["overlay"]["seconds"]
        )
        assert run["results_bytes"] == sum(run["results_files"].values()) > 0
        assert any(name.startswith("warped") for name in run["results_files"])
        assert run["session_bytes"] == sum(run["session_files"].values()) > 0
        assert run["whole_run_seconds"] == pytest.approx(
            sum(run["stages"][name]["seconds"] for name in ("general", "iso", "rso"))
        )
    coarse, fine = runs
    assert fine["voxels"] > coarse["voxels"]
    assert coarse["size"] == [48, 40, 32]
    # The resampled inputs stay in the cache; the runs' folders are measured, then removed.
    assert len(list((tmp_path / "scale_cache").rglob("fixed.nii.gz"))) == 2
    assert not (tmp_path / "scale_runs").exists()
    table = (tmp_path / "scale.md").read_text()
    assert record["machine"]["cpu"] in table and table.count("| fp32 |") == 2


def test_an_extent_pads_the_case_around_its_centre_with_air(shifted_case):
    from rso.evaluation.bench.scale import resample_isotropic

    moving = sitk.ReadImage(shifted_case.moving)
    padded = resample_isotropic(moving, 2.0, "linear", extent_mm=(200.0, 180.0, 160.0))
    assert padded.GetSize() == (100, 90, 80)
    centre = [(n - 1) / 2 for n in moving.GetSize()]
    np.testing.assert_allclose(
        padded.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in padded.GetSize()]),
        moving.TransformContinuousIndexToPhysicalPoint(centre),
        atol=1e-6,
    )
    values = sitk.GetArrayFromImage(padded)
    assert values[0, 0, 0] == -1000.0 and values.max() > 0  # air beyond the scan, anatomy inside
