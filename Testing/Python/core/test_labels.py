"""Labels carried through a known field on real chest CT anatomy: lungs, small nodules, the field of
view, names and colours, overlap measures, and refusing an image that is not a label map."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from rso.core import labels as L
from rso.errors import InputError
from rso.simulation.anatomy import lung_mask

NODULE_RADIUS_MM = 2.5  # a 5-mm nodule: about one voxel of the 4.5 x 4.5 x 5 mm test CT


def physical_points(image: sitk.Image) -> np.ndarray:
    """LPS mm of every voxel centre, (z, y, x, 3)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij"), -1)[
        ..., ::-1
    ]
    step = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return index @ step.T + np.array(image.GetOrigin())


def spheres(reference: sitk.Image, centres, radius_mm: float) -> sitk.Image:
    """Label i + 1 = the voxels whose centres lie within ``radius_mm`` of centre i."""
    points = physical_points(reference)
    array = np.zeros(points.shape[:3], np.uint8)
    for value, centre in enumerate(centres, start=1):
        array[np.linalg.norm(points - np.asarray(centre), axis=-1) <= radius_mm] = value
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def split_lungs(mask: sitk.Image, midline_x: float) -> sitk.Image:
    """Right lung = 1, left lung = 2 (LPS x grows to the patient's left): two labels that touch."""
    inside = sitk.GetArrayFromImage(mask) > 0
    left = physical_points(mask)[..., 0] > midline_x
    image = sitk.GetImageFromArray((inside * np.where(left, 2, 1)).astype(np.uint8))
    image.CopyInformation(mask)
    return image


@pytest.fixture(scope="module")
def lungs(known_pair):
    """The lungs of the moving CT and, as the truth, the same segmentation of the fixed CT."""
    fixed, moving, _ = known_pair
    moving_mask = lung_mask(moving)
    midline = float(np.median(physical_points(moving)[sitk.GetArrayViewFromImage(moving_mask) > 0][:, 0]))
    return split_lungs(moving_mask, midline), split_lungs(lung_mask(fixed), midline)


def test_lungs_carried_through_the_known_field_match_the_lungs_of_the_fixed_image(known_pair, lungs):
    fixed, _, truth = known_pair
    moving_lungs, fixed_lungs = lungs
    carried = L.propagate(moving_lungs, truth, fixed)
    assert carried.GetSize() == fixed.GetSize() and carried.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(carried.GetOrigin(), fixed.GetOrigin())
    scores = L.overlap(carried, fixed_lungs)
    assert set(scores) == {1, 2}
    for value in (1, 2):
        assert scores[value]["dice"] >= 0.95, scores
        assert scores[value]["hd95_mm"] <= 5.0  # about one voxel (4.5 x 4.5 x 5 mm)
    # Not the identity: the lungs moved (up to 12 mm at the base), and the unmoved labels score worse.
    unmoved = L.overlap(moving_lungs, fixed_lungs)
    assert (
        all(unmoved[v]["dice"] < scores[v]["dice"] for v in (1, 2))
        and min(unmoved[v]["dice"] for v in (1, 2)) < 0.95
    )


def test_five_mm_nodules_are_never_lost_and_land_where_the_field_takes_them(known_pair, lungs):
    fixed, moving, truth = known_pair
    lung_points = physical_points(moving)[sitk.GetArrayViewFromImage(lungs[0]) > 0]
    rng = np.random.default_rng(3)
    centres = []
    while len(centres) < 12:  # well apart, so that each nodule is its own label
        candidate = lung_points[rng.integers(len(lung_points))] + rng.uniform(-2, 2, 3)
        if all(np.linalg.norm(candidate - c) > 20 for c in centres):
            centres.append(candidate)
    nodules = spheres(moving, centres, NODULE_RADIUS_MM)
    assert len(L.label_values(nodules)) >= 10  # some centres fall between voxel centres: no voxel at all
    done = L.propagate_with_shares(nodules, truth, fixed)
    carried = sitk.GetArrayViewFromImage(done.image)
    points = physical_points(fixed)
    transform = sitk.DisplacementFieldTransform(sitk.Image(truth))
    for value in L.label_values(nodules):
        assert (carried == value).any(), f"nodule {value} was lost"
        where = points[carried == value].mean(axis=0)
        # The carried nodule sits where the true field maps it back onto the drawn one (within a voxel).
        assert np.linalg.norm(np.array(transform.TransformPoint(where.tolist())) - centres[value - 1]) < 7.0
    assert done.kept, "the test should include nodules that only the keep rule saves"


def test_labels_outside_the_field_of_view_are_handled_and_named(known_pair, tmp_path):
    fixed_full, moving, truth = known_pair
    size = fixed_full.GetSize()
    fixed = fixed_full[:, :, size[2] // 2 :]  # a CBCT-like smaller field of view: the upper half only
    field = truth[:, :, size[2] // 2 :]
    lo, hi = (
        np.array(fixed.GetOrigin()),
        np.array(fixed.TransformIndexToPhysicalPoint([n - 1 for n in fixed.GetSize()])),
    )
    middle = (lo + hi) / 2
    centres = [
        middle + [0, 0, 0.3 * (hi[2] - lo[2])],  # well inside
        [middle[0], middle[1], lo[2] - 60.0],  # in the half that was cut away
        [middle[0], middle[1], lo[2]],
    ]  # across the edge
    labels = spheres(moving, centres, 15.0)
    table = {
        1: L.Label(1, "inside", (1, 0, 0)),
        2: L.Label(2, "cut away", (0, 1, 0)),
        3: L.Label(3, "edge", (0, 0, 1)),
    }
    paths, report = L.write_propagated(L.LabelInput(labels, table), field, fixed, tmp_path)
    assert report["outside_field_of_view"] == ["cut away"]
    assert report["partly_outside_field_of_view"] == ["edge"]
    rows = {row["name"]: row for row in report["labels"]}
    assert rows["inside"]["status"] == "in view" and rows["inside"]["in_view_fraction"] > 0.97
    assert rows["cut away"]["volume_ml_fixed"] == 0 and rows["cut away"]["volume_ml_moving"] > 10
    assert 0.2 < rows["edge"]["in_view_fraction"] < 0.8
    assert json.loads(paths["labels_report"].read_text()) == json.loads(json.dumps(report))
    written = sitk.ReadImage(str(paths["labels_warped"]))
    assert written.GetSize() == fixed.GetSize()
    assert set(L.label_values(written)) == {1, 3}


def test_a_float_image_is_refused_as_labels_and_a_float_mask_is_accepted(chest_ct, tmp_path):
    with pytest.raises(InputError, match="non-integer values.*image rather than labels"):
        L.check_label_image(sitk.SmoothingRecursiveGaussian(chest_ct, 2.0))
    rounded = sitk.Round(chest_ct) + 1024.0  # whole numbers, none negative, but thousands of them: an image
    with pytest.raises(InputError, match="distinct values.*image rather than labels"):
        L.check_label_image(rounded)
    mask = sitk.Cast(sitk.BinaryThreshold(chest_ct, -500, 5000, 1, 0), sitk.sitkFloat32)
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    image, table = L.read_labels(tmp_path / "mask.nii.gz")
    assert image.GetPixelID() == sitk.sitkUInt8 and list(table) == [1] and table[1].name == "label 1"
    with pytest.raises(InputError, match="negative"):
        L.check_label_image(sitk.Cast(mask, sitk.sitkInt16) - 1)


def test_names_and_colours_come_from_a_seg_nrrd_or_a_colour_table(tmp_path):
    array = np.zeros((6, 7, 8), np.uint8)
    array[1:3, 1:3, 1:3], array[4:6, 4:6, 4:6] = 3, 7
    image = sitk.GetImageFromArray(array)
    for index, (value, name, color) in enumerate([(3, "GTV", "1 0 0"), (7, "spinal cord", "0 0.5 1")]):
        image.SetMetaData(f"Segment{index}_Name", name)
        image.SetMetaData(f"Segment{index}_LabelValue", str(value))
        image.SetMetaData(f"Segment{index}_Color", color)
    sitk.WriteImage(image, str(tmp_path / "contours.seg.nrrd"))
    _, table = L.read_labels(tmp_path / "contours.seg.nrrd")
    assert {v: (t.name, t.color) for v, t in table.items()} == {
        3: ("GTV", (1.0, 0.0, 0.0)),
        7: ("spinal cord", (0.0, 0.5, 1.0)),
    }
    (tmp_path / "colors.txt").write_text(L.color_table_text(table))
    again = L.read_color_table(tmp_path / "colors.txt")
    assert [(t.value, t.name) for t in again.values()] == [(3, "GTV"), (7, "spinal_cord")]
    np.testing.assert_allclose(again[7].color, (0.0, 0.5, 1.0), atol=1 / 255)
    (tmp_path / "bad.txt").write_text("3 GTV red green blue\n")
    with pytest.raises(InputError, match="bad.txt, line 1"):
        L.read_color_table(tmp_path / "bad.txt")


def test_dice_and_hd95_of_concentric_spheres_match_geometry():
    reference = sitk.Image([48, 48, 48], sitk.sitkUInt8)
    reference.SetSpacing((1.0, 1.0, 1.0))
    centre = [23.5, 23.5, 23.5]
    small, large = spheres(reference, [centre], 10.0), spheres(reference, [centre], 13.0)
    scores = L.overlap(small, large)[1]
    assert scores["dice"] == pytest.approx(2 * 10**3 / (10**3 + 13**3), abs=0.01)
    assert scores["hd95_mm"] == pytest.approx(3.0, abs=1.0)  # every surface point is 3 mm from the other
    same = L.overlap(small, small)[1]
    assert same["dice"] == 1.0 and same["hd95_mm"] == 0.0
    assert L.overlap(small, small * 0)[1] == {
        "dice": 0.0,
        "hd95_mm": None,
        "volume_ml": [pytest.approx(4.19, abs=0.1), 0.0],
    }
