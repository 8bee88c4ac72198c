"""Batch runs on a real local Dask cluster (2 worker processes): 4 small real-CT pairs, one corrupt.

The corrupt pair is reported as failed and the other three complete; a second run skips those
three and tries only the failed one again. The first run goes through the command line, the
second through the Python API (what Slicer's console calls).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import resample_to_spacing, write

from rso.cli import main
from rso.errors import InputError
from rso.service.batch import BatchSettings, read_pairs, run_batch
from rso.simulation.phantom import breathing_like_field, pair_from_field

pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'rso-registration[batch]')"
)


def fast_settings() -> BatchSettings:
    from rso.settings import EngineSettings, ISOSettings, RSOSettings

    engine = EngineSettings(channels=(4, 8, 16, 32, 64), grid=(16, 32, 32), device="cpu", precision="fp32")
    return BatchSettings(engine=engine, iso=ISOSettings(iterations=2), rso=RSOSettings(iterations=2))


FAST_ARGS = [
    "--iso",
    "2",
    "--rso",
    "2",
    "--channels",
    "4,8,16,32,64",
    "--grid",
    "16,32,32",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--quiet",
]


def box_ras_around_centre(image: sitk.Image, half_mm: float = 20.0) -> str:
    x, y, z = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    return " ".join(
        f"{v:.1f}" for v in (-x - half_mm, -y - half_mm, z - half_mm, -x + half_mm, -y + half_mm, z + half_mm)
    )


def moved(ct: sitk.Image, amplitude_mm: float, bump_centre) -> tuple[sitk.Image, sitk.Image]:
    """(fixed, truth): the CT seen through a breathing-like field, which is then the exact
    fixed -> moving truth."""
    pair = pair_from_field(
        ct,
        breathing_like_field(
            ct, amplitude_mm=amplitude_mm, bump_mm=0.6 * amplitude_mm, bump_centre=bump_centre
        ),
    )
    return pair.fixed, pair.truth


@pytest.fixture(scope="module")
def pairs_csv(chest_ct, tmp_path_factory):
    """4 pairs: two motions of lung1, one of lung2 (real chest CTs), and one whose moving file is cut
    short."""
    from rso.simulation.fetch import fetch_data

    folder = tmp_path_factory.mktemp("pairs")
    lung2 = resample_to_spacing(sitk.ReadImage(str(fetch_data()["lung2"]), sitk.sitkFloat32), (6.0, 6.0, 6.0))
    rows = []
    for name, ct, amplitude, centre, truth_given, roi in (
        ("lung1-a", chest_ct, 10.0, (0.1, -0.1, 0.35), True, True),
        ("lung1-b", chest_ct, 6.0, (0.0, 0.2, -0.3), True, False),
        ("lung2", lung2, 8.0, (-0.2, 0.0, 0.3), False, True),
    ):
        fixed, truth = moved(ct, amplitude, centre)
        rows.append(
            {
                "name": name,
                "fixed": write(fixed, folder / f"{name}-fixed.nii.gz"),
                "moving": write(ct, folder / f"{name}-moving.nii.gz"),
                "truth": write(truth, folder / f"{name}-truth.nii.gz") if truth_given else "",
                "roi": box_ras_around_centre(fixed) if roi else "",
            }
        )
    # lung1-a comes with both images' projection geometries (parallel beam, the fast projector): matched
    from rso.core.projection.geometry import ProjectionGeometry, write_geometry

    for role, offset in (("fixed_geometry", 0.0), ("moving_geometry", 3.6)):
        geometry = ProjectionGeometry.circular(1000.0, 0.0, [offset + 7.2 * k for k in range(25)])
        rows[0][role] = os.path.relpath(write_geometry(geometry, folder / f"{role}.xml"), folder)
    # ... and landmarks on both images (a Slicer markups file, LPS), carried to its report
    from rso.core.landmarks import Landmarks, write_markups_json

    fixed_lung1 = sitk.ReadImage(rows[0]["fixed"])
    centre = fixed_lung1.TransformContinuousIndexToPhysicalPoint([n / 2 for n in fixed_lung1.GetSize()])
    points = Landmarks(np.array(centre) + np.array([[0.0, 0.0, 0.0], [10.0, 5.0, -5.0], [-8.0, 4.0, 6.0]]))
    for role in ("landmarks_fixed", "landmarks_moving"):
        rows[0][role] = os.path.relpath(write_markups_json(points, folder / f"{role}.mrk.json"), folder)
    whole = Path(rows[0]["moving"]).read_bytes()
    (folder / "cut-moving.nii.gz").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    rows.append(
        {"name": "corrupt", "fixed": rows[0]["fixed"], "moving": "cut-moving.nii.gz", "truth": "", "roi": ""}
    )
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as handle:
        columns = ["name", "fixed", "moving", "truth", "roi", "fixed_geometry", "moving_geometry"]
        columns += ["landmarks_fixed", "landmarks_moving"]
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(
            {
                **row,
                "fixed": os.path.relpath(row["fixed"], folder),
                "moving": os.path.relpath(folder / row["moving"], folder),
            }
            for row in rows
        )
    return path


def summary_rows(out) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def test_batch_runs_every_pair_records_the_corrupt_one_and_resumes(pairs_csv, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["batch", str(pairs_csv), "--out", str(out), "--workers", "2", *FAST_ARGS]) == 1  # one failed
    printed = capsys.readouterr().out
    assert "3 done, 0 skipped, 1 failed" in printed

    rows = summary_rows(out)
    assert {name: row["status"] for name, row in rows.items()} == {
        "lung1-a": "done",
        "lung1-b": "done",
        "lung2": "done",
        "corrupt": "failed",
    }
    assert "truncated or corrupt" in rows["corrupt"]["error"] and "\n" not in rows["corrupt"]["error"]
    for name in ("lung1-a", "lung1-b", "lung2"):
        row = rows[name]
        assert float(row["seconds"]) > 0 and float(row["rmse_hu"]) > 0 and float(row["disk_mb"]) > 0
        assert float(row["session_mb"]) > 0  # what the session took before it was dropped
        assert not (out / name / "session").exists()  # results only, unless --keep-sessions
        report = json.loads((out / name / "report.json").read_text())
        kinds = [step["kind"] for step in report["steps"]]
        assert kinds == (["general", "iso", "rso"] if name != "lung1-b" else ["general", "iso"])
        matching = report["artefact_matching"]["status"]
        assert matching == (
            "artefact matching on: parallel beam, 25 and 25 views"
            if name == "lung1-a"
            else "artefact matching off: no projection geometry"
        )
        assert ("landmark_tre_mm" in report) == (name == "lung1-a")  # the landmark columns reached it
        warped = sitk.ReadImage(str(out / name / "warped.nii.gz"))
        assert (
            warped.GetSize() == sitk.ReadImage(read_pairs(pairs_csv)[list(rows).index(name)].fixed).GetSize()
        )
    assert float(rows["lung1-a"]["tre_mm"]) > 0 and rows["lung2"]["tre_mm"] == ""  # TRE only with a truth
    document = json.loads((out / "summary.json").read_text())
    assert {key: document["totals"][key] for key in ("pairs", "done", "skipped", "failed")} == {
        "pairs": 4,
        "done": 3,
        "skipped": 0,
        "failed": 1,
    }
    assert document["totals"]["disk_mb"] == pytest.approx(
        sum(float(r["disk_mb"] or 0) for r in rows.values()), abs=0.05
    )

    written = {
        name: (out / name / "report.json").stat().st_mtime_ns for name in ("lung1-a", "lung1-b", "lung2")
    }
    seen = []
    summary = run_batch(pairs_csv, out, fast_settings(), workers=2, on_result=seen.append)
    assert sorted((row["name"], row["status"]) for row in seen) == [
        ("corrupt", "failed"),
        ("lung1-a", "skipped"),
        ("lung1-b", "skipped"),
        ("lung2", "skipped"),
    ]
    assert {
        name: (out / name / "report.json").stat().st_mtime_ns for name in written
    } == written  # not run again
    assert (
        summary.totals["skipped"] == 3
        and summary_rows(out)["lung1-a"]["rmse_hu"] == rows["lung1-a"]["rmse_hu"]
    )


def test_a_bad_pairs_file_is_one_clear_error_before_anything_runs(tmp_path):
    cases = {
        "fixed,moving\n": "at least one row",
        "fixed,moving,colour\na.nii,b.nii,red\n": "unknown column(s) colour",
        "fixed,moving,roi\na.nii,b.nii,1 2 3\n": "row 1: roi '1 2 3' is not 6 numbers",
        "fixed,moving\na.nii,\n": "row 1: moving is empty",
        "name,fixed,moving\nx,a,b\nx,c,d\n": "repeated: x",
        "fixed,moving,fixed_geometry\na,b,g.xml\n": "give fixed_geometry and moving_geometry together",
        "fixed,moving,landmarks_moving\na,b,m.fcsv\n": "give landmarks_fixed and landmarks_moving together",
        "fixed,moving\na,missing.nii.gz\n": "row 1: moving not found",
        "fixed,moving,truth\na,b\nc,d,t.nii.gz\n": "row 2: truth not found",
    }
    for name in ("a", "b", "c", "d"):
        (tmp_path / name).write_text("")  # every row's images exist, so each row fails on its own flaw
    for text, message in cases.items():
        path = tmp_path / "pairs.csv"
        path.write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            run_batch(path, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_settings_travel_as_plain_json():
    settings = fast_settings()
    assert BatchSettings.from_json(settings.to_json()) == settings
