"""Vendor readers (rso.acquisition.readers, .scanners) on tiny files each test writes in the vendor's format
(vendor_files.py): the pixels RTK's ProjectionsReader makes of them (line integrals) and the geometry RTK's
readers make of the scanner's files (angles, SID/SDD, offsets); and the one-line errors.

RTK's first import (~20-40 s) is paid once, in the module's ``rtk`` fixture; then every test takes well
under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from vendor_files import (
    write_elekta_dbf,
    write_frames_xml,
    write_his,
    write_hnd,
    write_obi_scan_xml,
    write_probeam_scan_xml,
    write_xim,
)

from rso.acquisition.readers import projection_files, read_projections
from rso.acquisition.scanners import dbf_records, find_geometry, geometry_kind, read_scanner_geometry
from rso.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute")

ANGLES = (-170.5, -40.0, 95.25)  # three projections per scan


@pytest.fixture(scope="module")
def rtk():
    """RTK's module: its first import costs ~20-40 s, paid once here."""
    from rso.acquisition.readers import rtk_module

    module = rtk_module()
    assert hasattr(module, "ProjectionsReader")
    return module


def scan(folder, files, geometry=None, dicom_uid=None):
    """(projections, geometry) as the pipeline reads them."""
    projections = read_projections(projection_files(folder))
    assert [p.name for p in projections.files] == files
    return projections, read_scanner_geometry(find_geometry(folder, geometry), projections, dicom_uid)


def raw_counts(rows, columns, top, seed):
    """(rows, columns) counts of a smooth panel under ``top`` plus a little structure."""
    rng = np.random.default_rng(seed)
    return (top * np.exp(-rng.uniform(0.1, 2.0, (rows, columns)))).astype(np.int64)


def test_elekta_his_and_xvi5_frames(rtk, tmp_path):
    frames = [raw_counts(14, 16, 60000, seed) for seed in range(3)]
    files = [f"{i + 1:05d}.his" for i in range(3)]
    for name, frame in zip(files, frames):
        write_his(tmp_path / name, frame[None])
    write_frames_xml(tmp_path / "_Frames.xml", ANGLES, u_centre_mm=115.0, v_centre_mm=-2.5)
    projections, geometry = scan(tmp_path, files)
    # RTK crops 4 pixels on every side of a .his, then -log(1 - raw / 65536) (its lookup tables)
    assert projections.kind == "elekta-his" and projections.line_integrals.shape == (3, 6, 8)
    expected = -np.log(1.0 - np.stack(frames)[:, 4:-4, 4:-4] / 65536.0)
    np.testing.assert_allclose(projections.line_integrals, expected, rtol=1e-5)
    spacing = (409.6 / 16, 409.6 / 14)  # the panel is 409.6 mm whatever the pixels
    np.testing.assert_allclose(projections.spacing_mm, spacing)
    np.testing.assert_allclose(projections.origin_mm, [(4 - 7.5) * spacing[0], (4 - 6.5) * spacing[1]])
    assert projections.detector().size_px == (8, 6)
    np.testing.assert_allclose(geometry.gantry_deg, [189.5, 320.0, 95.25])
    assert set(geometry.source_to_isocenter_mm) == {1000.0} and set(geometry.source_to_detector_mm) == {
        1536.0
    }
    assert set(geometry.projection_offset_x_mm) == {-115.0} and set(geometry.projection_offset_y_mm) == {2.5}


def test_elekta_synergy_dbf_found_two_folders_up(rtk, tmp_path):
    uid = "1.3.46.423632.1"
    folder = tmp_path / "patient_7" / "IMAGES" / f"img_{uid}"
    folder.mkdir(parents=True)
    for i in range(3):
        write_his(folder / f"{i}.his", raw_counts(10, 10, 50000, i)[None])
    write_elekta_dbf(tmp_path, uid, ANGLES, u_centre_mm=-30.0, v_centre_mm=1.0)
    assert geometry_kind(tmp_path / "FRAME.DBF") == "elekta-dbf"
    assert [r["DICOM_UID"] for r in dbf_records(tmp_path / "IMAGE.DBF")] == ["9.9.9", uid]
    _, geometry = scan(folder, ["0.his", "1.his", "2.his"])  # the UID from the folder img_<UID>
    np.testing.assert_allclose(geometry.gantry_deg, [189.5, 320.0, 95.25])
    assert set(geometry.source_to_detector_mm) == {1536.0}
    assert set(geometry.projection_offset_x_mm) == {30.0} and set(geometry.projection_offset_y_mm) == {-1.0}
    with pytest.raises(InputError, match="DICOM_UID 4.4") as error:
        scan(folder, ["0.his", "1.his", "2.his"], tmp_path / "IMAGE.DBF", dicom_uid="4.4")
    assert "\n" not in str(error.value)


def test_varian_obi_hnd_half_fan(rtk, tmp_path):
    images = [raw_counts(5, 8, 130000, seed) for seed in range(3)]
    for i, image in enumerate(images):
        write_hnd(tmp_path / f"Proj_{i:05d}.hnd", image, ANGLES[i] % 360, pixel_mm=(0.784, 0.5))
    write_obi_scan_xml(tmp_path / "Scan.xml", sid=1000.0, sdd=1500.0, offset=(2.0, -1.0), half_fan_lat=148.0)
    projections, geometry = scan(tmp_path, [f"Proj_{i:05d}.hnd" for i in range(3)])
    assert projections.kind == "varian-hnd" and projections.line_integrals.shape == (3, 5, 8)
    np.testing.assert_allclose(projections.line_integrals, np.log(139000.0 / np.stack(images)), rtol=1e-5)
    np.testing.assert_allclose(projections.spacing_mm, (0.784, 0.5))
    np.testing.assert_allclose(projections.origin_mm, (-3.5 * 0.784, -2 * 0.5))
    np.testing.assert_allclose(geometry.gantry_deg, np.mod(ANGLES, 360))
    assert set(geometry.source_to_isocenter_mm) == {1000.0} and set(geometry.source_to_detector_mm) == {
        1500.0
    }
    assert set(geometry.projection_offset_x_mm) == {150.0} and geometry.is_half_fan  # offset + DetectorPosLat
    assert set(geometry.projection_offset_y_mm) == {-1.0}


def test_varian_truebeam_xim(rtk, tmp_path):
    images = [raw_counts(9, 4, 120000, seed) for seed in range(3)]
    for i, image in enumerate(images):
        write_xim(tmp_path / f"Proj_{i:05d}.xim", image, ANGLES[i] + 180.0, offset_mm=(1.5, -0.5))
    write_probeam_scan_xml(tmp_path / "Scan.xml", sid=1000.0, sdd=1540.0)
    projections, geometry = scan(tmp_path, [f"Proj_{i:05d}.xim" for i in range(3)])
    assert projections.kind == "varian-xim" and projections.line_integrals.shape == (3, 9, 4)
    np.testing.assert_allclose(projections.line_integrals, np.log(139000.0 / np.stack(images)), rtol=1e-5)
    np.testing.assert_allclose(projections.spacing_mm, (0.388, 0.388))
    np.testing.assert_allclose(geometry.gantry_deg, np.mod(-np.asarray(ANGLES), 360))  # RTK: 180 - angle
    assert set(geometry.source_to_detector_mm) == {1540.0}
    assert set(geometry.projection_offset_x_mm) == {1.5} and set(geometry.projection_offset_y_mm) == {-0.5}


def test_mha_stack_of_line_integrals_and_rtk_xml(rtk, tmp_path):
    from rso.core.projection import ProjectionGeometry, write_geometry

    stack = np.random.default_rng(3).uniform(0.0, 4.0, (4, 3, 5)).astype(np.float32)
    image = sitk.GetImageFromArray(stack)
    image.SetSpacing((1.2, 0.8, 1.0))
    image.SetOrigin((-2.4, -0.8, 0.0))
    sitk.WriteImage(image, str(tmp_path / "stack.mha"))
    write_geometry(ProjectionGeometry.circular(900.0, 1400.0, [0, 90, 180, 270]), tmp_path / "geometry.xml")
    projections, geometry = scan(tmp_path / "stack.mha", ["stack.mha"])  # geometry found beside the stack
    assert projections.kind == "image"
    np.testing.assert_array_equal(projections.line_integrals, stack)  # read as it is: no conversion
    assert projections.origin_mm == (-2.4, -0.8)
    assert geometry.gantry_deg == (0.0, 90.0, 180.0, 270.0) and set(geometry.source_to_detector_mm) == {
        1400.0
    }


def test_one_line_errors(rtk, tmp_path):
    for i in range(3):
        write_his(tmp_path / f"{i}.his", raw_counts(10, 10, 50000, i)[None])
    write_frames_xml(tmp_path / "_Frames.xml", ANGLES[:2])
    projections = read_projections(projection_files(tmp_path))

    def fails(message, call, *args):
        with pytest.raises(InputError, match=message) as error:
            call(*args)
        assert "\n" not in str(error.value)

    fails("has 2 projections but 3", read_scanner_geometry, tmp_path / "_Frames.xml", projections)
    fails("unknown projection format", projection_files, tmp_path / "_Frames.xml")
    fails("unknown geometry format", find_geometry, tmp_path, tmp_path / "0.his")
    write_obi_scan_xml(tmp_path / "Scan.xml")
    fails("several geometry files", find_geometry, tmp_path)
    fails(
        "goes with .hnd/.hnc projections, not .his", read_scanner_geometry, tmp_path / "Scan.xml", projections
    )
    (tmp_path / "Scan.xml").write_text("<Scan><CalibratedSAD>1000</CalibratedSAD></Scan>")  # RTK would crash
    fails("missing or non-numeric CalibratedSID", read_scanner_geometry, tmp_path / "Scan.xml", projections)
    write_hnd(tmp_path / "extra.hnd", raw_counts(5, 8, 1000, 0), 0.0)
    fails("several formats", projection_files, tmp_path)
    fails("no projections RTK can read", projection_files, tmp_path, r"\.nothing$")
