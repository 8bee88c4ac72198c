"""Landmark files as Slicer, DIR-Lab, elastix and VTK write them, read to LPS mm; pairing; the TRE of a
known analytic field against a hand computation; the Slicer markups writer read back."""

import json
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from rso.core import landmark_formats as F
from rso.core.geometry import ModelGrid
from rso.core.landmarks import Landmarks, landmark_tre, pair_landmarks, read_landmarks, write_markups_json
from rso.errors import InputError

LPS = np.array([[-12.5, 30.25, 5.0], [40.0, -7.5, -120.75], [0.125, 0.0, 64.0]])
RAS = LPS * [-1, -1, 1]
LABELS = ("F-1", "carina", "apex, right")


def slicer_markups(system: str, positions, labels=LABELS) -> dict:
    """A point list exactly as Slicer 5.x saves it (markups-schema-v1.0.3)."""
    orientation = [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0] if system == "LPS" else None
    points = [
        {
            "id": str(n),
            "label": label,
            "description": "",
            "associatedNodeID": "vtkMRMLScalarVolumeNode1",
            "position": list(position),
            "orientation": orientation or [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        }
        for n, (label, position) in enumerate(zip(labels, positions), start=1)
    ]
    return {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
        "Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": system,
                "coordinateUnits": "mm",
                "locked": False,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": len(points),
                "controlPoints": points,
                "measurements": [],
                "display": {"visibility": True, "opacity": 1.0, "color": [0.4, 1.0, 1.0], "glyphScale": 3.0},
            }
        ],
    }


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# --- Slicer markups -------------------------------------------------------------------------------------


@pytest.mark.parametrize("system, positions", [("LPS", LPS), ("RAS", RAS)])
def test_markups_json_as_slicer_writes_it(tmp_path, system, positions):
    path = tmp_path / "F.mrk.json"
    path.write_text(json.dumps(slicer_markups(system, positions.tolist()), indent=4))
    landmarks = read_landmarks(path)
    np.testing.assert_allclose(landmarks.points, LPS)
    assert landmarks.points.dtype == np.float64 and landmarks.labels == LABELS


def test_markups_json_refuses_unplaced_points_and_several_lists(tmp_path):
    document = slicer_markups("LPS", LPS.tolist())
    document["markups"][0]["controlPoints"][1]["positionStatus"] = "undefined"
    with pytest.raises(InputError, match="control point 2 .carina. has no position"):
        read_landmarks(write(tmp_path / "a.mrk.json", json.dumps(document)))
    document = slicer_markups("LPS", LPS.tolist())
    document["markups"] *= 2
    with pytest.raises(InputError, match="holds 2 markups"):
        read_landmarks(write(tmp_path / "b.mrk.json", json.dumps(document)))


def test_markups_json_in_micrometres(tmp_path):
    document = slicer_markups("LPS", (LPS * 1000).tolist())
    document["markups"][0]["coordinateUnits"] = "um"
    np.testing.assert_allclose(
        read_landmarks(write(tmp_path / "u.mrk.json", json.dumps(document))).points, LPS
    )


def fcsv(system_line: str, positions) -> str:
    """An .fcsv as Slicer 4.11-5.x writes it (ids, quaternion, flags, a label quoted for its comma)."""
    header = (
        "# Markups fiducial file version = 4.11\n"
        f"# CoordinateSystem = {system_line}\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
    )
    rows = [
        f"vtkMRMLMarkupsFiducialNode_{n},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,{label},,vtkMRMLScalarVolumeNode1"
        for n, ((x, y, z), label) in enumerate(zip(positions.tolist(), ["F-1", "carina", '"apex, right"']))
    ]
    return header + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    "system_line, positions", [("LPS", LPS), ("RAS", RAS), ("1", LPS), ("0", RAS)], ids=str
)
def test_fcsv_as_slicer_writes_it(tmp_path, system_line, positions):
    landmarks = read_landmarks(write(tmp_path / "F.fcsv", fcsv(system_line, positions)))
    np.testing.assert_allclose(landmarks.points, LPS)
    assert landmarks.labels == LABELS


def test_fcsv_without_a_coordinate_system_line_is_ras_as_in_slicer(tmp_path):
    text = "\n".join(line for line in fcsv("LPS", RAS).splitlines() if "CoordinateSystem" not in line)
    np.testing.assert_allclose(read_landmarks(write(tmp_path / "old.fcsv", text)).points, LPS)


# --- CSV ------------------------------------------------------------------------------------------------


def test_csv_as_slicer_exports_control_points(tmp_path):
    rows = [f'"{label}",{x},{y},{z},1,1,1,0,' for label, (x, y, z) in zip(LABELS, LPS.tolist())]
    text = "label,l,p,s,defined,selected,visible,locked,description\n" + "\n".join(rows) + "\n"
    landmarks = read_landmarks(write(tmp_path / "points.csv", text))
    np.testing.assert_allclose(landmarks.points, LPS)
    assert landmarks.labels == LABELS


def test_csv_in_ras_columns_and_with_a_stated_system(tmp_path):
    ras = "R,A,S\n" + "\n".join(",".join(map(str, row)) for row in RAS.tolist())
    np.testing.assert_allclose(read_landmarks(write(tmp_path / "ras.csv", ras)).points, LPS)
    stated = "# coordinates: RAS\nid\tx\ty\tz\n" + "\n".join(
        f"{n}\t" + "\t".join(map(str, row)) for n, row in enumerate(RAS.tolist())
    )
    landmarks = read_landmarks(write(tmp_path / "stated.tsv", stated))
    np.testing.assert_allclose(landmarks.points, LPS)
    assert landmarks.labels is None


def test_csv_that_does_not_state_its_system_is_refused(tmp_path):
    body = "\n".join(",".join(map(str, row)) for row in LPS.tolist())
    with pytest.raises(InputError, match="does not state its coordinate system"):
        read_landmarks(write(tmp_path / "bare.csv", "x,y,z\n" + body))
    with pytest.raises(InputError, match="does not state its coordinate system"):
        read_landmarks(write(tmp_path / "both.csv", "# coordinates: LPS\nr,a,s\n" + body))
    with pytest.raises(InputError, match="names no"):
        read_landmarks(write(tmp_path / "none.csv", "u,v,w\n" + body))


def test_csv_points_without_a_position_and_short_rows_are_refused(tmp_path):
    undefined = "label,r,a,s,defined\nF-1,1,2,3,1\nF-2,0,0,0,0\n"
    with pytest.raises(InputError, match="point 2 has no position"):
        read_landmarks(write(tmp_path / "undefined.csv", undefined))
    with pytest.raises(InputError, match="row 3 has fewer cells"):
        read_landmarks(write(tmp_path / "short.csv", "l,p,s,label\n1,2,3,a\n4,5\n"))


# --- DIR-Lab and elastix --------------------------------------------------------------------------------


@pytest.fixture
def dirlab_image():
    """A DIR-Lab-like volume: 256 x 256 x 94 voxels, 0.97 x 0.97 x 2.5 mm, an origin far from zero."""
    image = sitk.Image([256, 256, 94], sitk.sitkInt16)
    image.SetSpacing((0.97, 0.97, 2.5))
    image.SetOrigin((-124.0, -180.5, -310.25))
    return image


DIRLAB_TEXT = "85\t211\t51\n  1    1    1\n256\t256\t94\n"


def test_dirlab_indices_are_one_based_on_the_named_image(tmp_path, dirlab_image):
    path = write(tmp_path / "case1_300_T00_xyz.txt", DIRLAB_TEXT)
    expected = [
        dirlab_image.TransformContinuousIndexToPhysicalPoint([float(v) - 1 for v in line.split()])
        for line in DIRLAB_TEXT.splitlines()
    ]
    np.testing.assert_allclose(read_landmarks(path, dirlab_image).points, expected, atol=1e-9)
    np.testing.assert_allclose(expected[0], (-124.0 + 84 * 0.97, -180.5 + 210 * 0.97, -310.25 + 50 * 2.5))
    np.testing.assert_allclose(read_landmarks(path, ModelGrid.of_image(dirlab_image)).points, expected)
    sitk.WriteImage(dirlab_image, str(tmp_path / "case1_T00.mha"))
    np.testing.assert_allclose(read_landmarks(path, tmp_path / "case1_T00.mha").points, expected)


def test_dirlab_with_reversed_slices_and_outside_points(tmp_path, dirlab_image):
    path = write(tmp_path / "xyz.txt", "85 211 51\n")
    flipped = F.read_dirlab(path, dirlab_image, flip_z=True).points[0]
    np.testing.assert_allclose(flipped, dirlab_image.TransformIndexToPhysicalPoint((84, 210, 94 - 51)))
    with pytest.raises(InputError, match="give the image"):
        read_landmarks(path)
    with pytest.raises(InputError, match="point 1 .* lies outside the 256x256x94 image"):
        read_landmarks(write(tmp_path / "far.txt", "85 211 96\n"), dirlab_image)


def test_elastix_point_and_index_files(tmp_path, dirlab_image):
    points = write(
        tmp_path / "fixed_points.txt", "point\n3\n" + "\n".join(" ".join(map(str, r)) for r in LPS)
    )
    np.testing.assert_allclose(read_landmarks(points).points, LPS)
    index = write(tmp_path / "fixed_index.txt", "index\n2\n84 210 50\n0.5 1.5 2.5\n")
    expected = [
        dirlab_image.TransformContinuousIndexToPhysicalPoint(i) for i in ((84, 210, 50), (0.5, 1.5, 2.5))
    ]
    np.testing.assert_allclose(read_landmarks(index, dirlab_image).points, expected)
    with pytest.raises(InputError, match="holds voxel indices"):
        read_landmarks(index)
    with pytest.raises(InputError, match="announces 4 3-D points but holds 3 rows"):
        read_landmarks(write(tmp_path / "bad.txt", points.read_text().replace("\n3\n", "\n4\n")))


def test_transformix_output_points(tmp_path):
    rows = [
        f"Point\t{n}\t; InputIndex = [ 1 2 3 ]\t; InputPoint = [ 0.0 0.0 0.0 ]"
        f"\t; OutputIndexFixed = [ 1 2 3 ]\t; OutputPoint = [ {x} {y} {z} ]\t; Deformation = [ 0 0 0 ]"
        for n, (x, y, z) in enumerate(LPS.tolist())
    ]
    path = write(tmp_path / "outputpoints.txt", "\n".join(rows) + "\n")
    np.testing.assert_allclose(read_landmarks(path).points, LPS)


# --- VTK ------------------------------------------------------------------------------------------------


def legacy_vtk(header: str, encoding: str, positions) -> bytes:
    head = (
        f"# vtk DataFile Version 4.2\n{header}\n{encoding}\nDATASET POLYDATA\nPOINTS {len(positions)} float\n"
    )
    if encoding == "BINARY":
        data = struct.pack(f">{3 * len(positions)}f", *np.ravel(positions))
    else:
        data = "\n".join(" ".join(map(str, row)) for row in positions).encode() + b"\n"
    return head.encode() + data + f"VERTICES {len(positions)} {2 * len(positions)}\n".encode()


@pytest.mark.parametrize("encoding", ["ASCII", "BINARY"])
def test_vtk_polydata_points_by_hand(tmp_path, encoding):
    path = tmp_path / "points.vtk"
    path.write_bytes(legacy_vtk("3D Slicer output. SPACE=RAS", encoding, RAS))
    np.testing.assert_allclose(read_landmarks(path).points, LPS, atol=1e-5)
    path.write_bytes(legacy_vtk("vtk output", encoding, LPS))  # no SPACE: LPS, as Slicer assumes
    np.testing.assert_allclose(read_landmarks(path).points, LPS, atol=1e-5)


def test_truncated_binary_vtk_is_refused(tmp_path):
    (tmp_path / "cut.vtk").write_bytes(legacy_vtk("SPACE=LPS", "BINARY", LPS)[:-40])
    with pytest.raises(InputError, match="ends inside its POINTS"):
        read_landmarks(tmp_path / "cut.vtk")


@pytest.mark.parametrize("binary", [False, True])
def test_vtk_written_by_vtk_itself(tmp_path, binary):
    vtk = pytest.importorskip("vtk")  # the test may use vtk; the engine never does
    points = vtk.vtkPoints()
    for row in LPS:
        points.InsertNextPoint(*row)
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(points)
    writer = vtk.vtkPolyDataWriter()
    writer.SetFileName(str(tmp_path / "p.vtk"))
    writer.SetInputData(polydata)
    writer.SetFileVersion(42)
    writer.SetHeader("3D Slicer output. SPACE=LPS")
    writer.SetFileType(vtk.VTK_BINARY if binary else vtk.VTK_ASCII)
    writer.Write()
    np.testing.assert_allclose(read_landmarks(tmp_path / "p.vtk").points, LPS, atol=1e-5)


# --- dispatch, pairing ----------------------------------------------------------------------------------


def test_unknown_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="unknown landmark format"):
        read_landmarks(write(tmp_path / "notes.txt", "these are not points\n"))
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(InputError, match="unknown landmark format"):
        read_landmarks(tmp_path / "blob.bin")
    with pytest.raises(InputError, match="not found"):
        read_landmarks(tmp_path / "absent.fcsv")


@pytest.mark.parametrize("points", [np.zeros((0, 3)), np.zeros((3, 2)), [[0.0, np.nan, 1.0]]], ids=str)
def test_landmarks_refuse_what_is_not_points(points):
    with pytest.raises(InputError, match="landmarks"):
        Landmarks(points)


def test_pairing_by_order_and_by_label():
    fixed = Landmarks(LPS, LABELS)
    moving = Landmarks(LPS[::-1] + 1.0, LABELS[::-1])
    same_fixed, paired = pair_landmarks(fixed, moving, by="label")
    assert same_fixed is fixed and paired.labels == LABELS
    np.testing.assert_allclose(paired.points, LPS + 1.0)
    assert pair_landmarks(fixed, moving)[1] is moving


@pytest.mark.parametrize(
    "moving, by, message",
    [
        (Landmarks(LPS[:2], LABELS[:2]), "order", "3 fixed landmarks but 2 moving ones"),
        (Landmarks(LPS, ("F-1", "carina", "F-1")), "label", "moving landmarks repeat the label.s. F-1"),
        (Landmarks(LPS, ("F-1", "carina", "apex")), "label", r"missing in moving \['apex, right'\]"),
        (Landmarks(LPS), "label", "moving landmarks have no labels"),
        (Landmarks(LPS, LABELS), "nearest", "pair by 'order' or 'label'"),
    ],
)
def test_pairing_errors_are_one_line(moving, by, message):
    with pytest.raises(InputError, match=message) as caught:
        pair_landmarks(Landmarks(LPS, LABELS), moving, by=by)
    assert "\n" not in str(caught.value)


# --- TRE ------------------------------------------------------------------------------------------------

SHIFT = np.array([2.0, -1.0, 0.5])
LINEAR = np.diag([0.01, 0.02, -0.01])


def analytic_field(dtype=np.float64) -> sitk.Image:
    """u(x) = SHIFT + LINEAR x (LPS mm) on a 60 x 40 x 40 grid with a flipped y axis, sampled at voxels."""
    reference = sitk.Image([60, 40, 40], sitk.sitkFloat32)
    reference.SetSpacing((2.0, 2.5, 3.0))
    reference.SetOrigin((-50.0, 60.0, -30.0))
    reference.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 40, 60)], indexing="ij"), -1)[..., ::-1]
    lps = index @ (np.diag([1.0, -1.0, 1.0]) @ np.diag([2.0, 2.5, 3.0])).T + reference.GetOrigin()
    field = sitk.GetImageFromArray((SHIFT + lps @ LINEAR.T).astype(dtype), isVector=True)
    field.CopyInformation(reference)
    return field


def test_tre_of_a_translation_plus_linear_field_equals_the_hand_computation():
    # u(10, 20, 30) = (2.1, -0.6, 0.2): mapped (12.1, 19.4, 30.2), 5 mm from (15.1, 23.4, 30.2).
    # u(0, 0, 0) = (2, -1, 0.5): mapped exactly onto its moving point, 0 mm.
    # u(-20, 10, 40) = (1.8, -0.8, 0.1): mapped (-18.2, 9.2, 40.1), 1 mm from (-18.2, 10.2, 40.1).
    # (500, 0, 0) lies beyond the field (x ends at 68.5 mm): reported, not measured.
    fixed = np.array([[10.0, 20.0, 30.0], [0.0, 0.0, 0.0], [-20.0, 10.0, 40.0], [500.0, 0.0, 0.0]])
    moving = np.array([[15.1, 23.4, 30.2], [2.0, -1.0, 0.5], [-18.2, 10.2, 40.1], [500.0, 0.0, 0.0]])
    for dtype in (np.float64, np.float32):
        tre = landmark_tre(fixed, moving, analytic_field(dtype))
        assert tre == {
            "mean": 2.0,
            "median": 1.0,
            "p95": 4.6,  # [0, 1, 5] at the 95th percentile: 1 + 0.9 * (5 - 1)
            "max": 5.0,
            "count": 3,
            "per_point": [5.0, 0.0, 1.0, None],
            "outside": [3],
        }
    initial = landmark_tre(Landmarks(fixed[:3]), Landmarks(moving[:3]))
    assert initial["per_point"] == [round(float(np.linalg.norm(d)), 3) for d in moving[:3] - fixed[:3]]
    assert initial["per_point"][0] == round(np.sqrt(5.1**2 + 3.4**2 + 0.2**2), 3) and initial["outside"] == []


def test_field_sampling_matches_simpleitk_displacement_field_transform():
    field = analytic_field()
    # A non-linear field too, so that the interpolation itself (not only its exactness on linear
    # fields) is compared, up to the grid's outer half voxel where ITK clamps.
    array = sitk.GetArrayFromImage(field)
    array += np.random.default_rng(0).normal(0, 2.0, array.shape)
    noisy = sitk.GetImageFromArray(array, isVector=True)
    noisy.CopyInformation(field)
    transform = sitk.DisplacementFieldTransform(sitk.Image(noisy))
    points = np.random.default_rng(1).uniform([-51, -38.7, -31.5], [69, 61.2, 88.5], (200, 3))
    from rso.core.landmarks import _sample_field

    displacement, inside = _sample_field(noisy, points)
    assert inside.all()
    expected = np.array([transform.TransformPoint(p.tolist()) for p in points]) - points
    np.testing.assert_allclose(displacement, expected, atol=1e-9)


def test_tre_refuses_unpaired_sets_and_a_field_nothing_lies_in():
    with pytest.raises(InputError, match="pair them first"):
        landmark_tre(LPS, LPS[:2])
    with pytest.raises(InputError, match="no fixed landmark lies inside"):
        landmark_tre(LPS + 1000, LPS, analytic_field())


# --- writer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_markups_writer_round_trip(tmp_path, system):
    landmarks = Landmarks(LPS, LABELS)
    path = write_markups_json(
        landmarks, tmp_path / "tre.mrk.json", [1.23456, None, 0.5], coordinate_system=system
    )
    back = read_landmarks(path)
    np.testing.assert_allclose(back.points, LPS, rtol=0, atol=1e-12)
    assert back.labels == LABELS
    markup = json.loads(path.read_text())["markups"][0]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == system
    stored = [point["position"] for point in markup["controlPoints"]]
    np.testing.assert_allclose(stored, LPS if system == "LPS" else RAS)
    assert [point["description"] for point in markup["controlPoints"]] == [
        "TRE 1.235 mm",
        "TRE: outside the displacement field",
        "TRE 0.500 mm",
    ]


def test_markups_writer_names_unlabelled_points_as_slicer_does(tmp_path):
    path = write_markups_json(Landmarks(LPS), tmp_path / "p.mrk.json")
    assert read_landmarks(path).labels == ("F-1", "F-2", "F-3")
    with pytest.raises(InputError, match="2 errors for 3 landmarks"):
        write_markups_json(Landmarks(LPS), tmp_path / "q.mrk.json", [1.0, 2.0])
