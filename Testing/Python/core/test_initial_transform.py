"""An initial transform T0 (a file, or the rigid pre-alignment) composed before the general model: the
results include it, the inverse field undoes them, transform.h5 resamples like displacement.nii.gz.

The case: a real chest CT (the fixed image) and the same CT moved rigidly (6 mm and 4 degrees) onto a
grid of its own (the moving image), so the truth is that rigid transform, fixed -> moving points.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TINY_CHANNELS, session_of, write

from rso.cli import EXIT_BAD_INPUT, main
from rso.core.initial import composed_field, export_transform, inverse_transform, read_initial_transform
from rso.core.session import RegistrationSession
from rso.errors import InputError

FAST = ["--channels", ",".join(map(str, TINY_CHANNELS)), "--grid", "32,64,64", "--device", "cpu"]
FAST += ["--precision", "fp32", "--no-figure", "--quiet"]
TRANSLATION_MM = (2.0, -4.0, 4.0)  # 6 mm
ROTATION_DEG = 4.0  # about the superior axis, through the image's centre


@pytest.fixture(scope="module")
def rigid_case(chest_ct, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rigid")
    fixed = chest_ct
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    truth = sitk.Euler3DTransform(centre, 0.0, 0.0, np.radians(ROTATION_DEG), TRANSLATION_MM)
    grid = sitk.Image([70, 70, 52], sitk.sitkFloat32)  # the moving image's own grid: 4 x 4 x 4.5 mm
    grid.SetSpacing((4.0, 4.0, 4.5))
    grid.SetOrigin((np.array(fixed.GetOrigin()) + (-3.0, -8.0, -5.0)).tolist())
    # moving(truth(x)) = fixed(x): the moving image is the fixed one pulled through the inverse.
    moving = sitk.Resample(fixed, grid, truth.GetInverse(), sitk.sitkLinear, -1000.0)
    truth_field = sitk.TransformToDisplacementField(
        truth,
        sitk.sitkVectorFloat64,
        fixed.GetSize(),
        fixed.GetOrigin(),
        fixed.GetSpacing(),
        fixed.GetDirection(),
    )
    sitk.WriteTransform(truth, str(folder / "initial.tfm"))
    from rso.simulation.anatomy import body_mask

    return {
        "fixed": write(fixed, folder / "fixed.nii.gz"),
        "moving": write(moving, folder / "moving.nii.gz"),
        "truth": write(truth_field, folder / "truth.nii.gz"),
        "initial": str(folder / "initial.tfm"),
        "transform": truth,
        "body": sitk.GetArrayFromImage(body_mask(fixed)).astype(bool),
        "folder": folder,
    }


def register(case, out, *extra) -> None:
    args = ["register", "--fixed", case["fixed"], "--moving", case["moving"], "--out", str(out)]
    assert main([*args, "--truth", case["truth"], "--outputs", "all", *extra, *FAST]) == 0


@pytest.fixture(scope="module")
def with_initial(rigid_case):
    out = rigid_case["folder"] / "with_initial"
    register(rigid_case, out, "--initial-transform", rigid_case["initial"], "--iso", "1", "--inverse")
    return out


@pytest.fixture(scope="module")
def prealigned(rigid_case):
    out = rigid_case["folder"] / "prealigned"
    register(rigid_case, out, "--prealign", "rigid", "--iso", "0")
    return out


def tre_mm(case, out) -> np.ndarray:
    """|exported field - truth| (mm) in the body."""
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement.nii.gz")))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(case["truth"]))
    return np.linalg.norm(field - truth, axis=-1)[case["body"]]


def fixed_points(case, count=200, seed=0) -> np.ndarray:
    """Random LPS points inside the fixed image's body, within its voxel centres' box."""
    fixed = sitk.ReadImage(case["fixed"])
    rng = np.random.default_rng(seed)
    index = np.argwhere(case["body"])[rng.choice(int(case["body"].sum()), count, replace=False)]
    # Within the voxel centres' box: in the outer half voxel ITK holds a field's edge value, where
    # transform.h5 (T0 exact after u) and the sampled field differ by up to (T0's matrix - I) x half a voxel.
    index = np.clip(index[:, ::-1] + rng.uniform(-0.5, 0.5, (count, 3)), 0, np.array(fixed.GetSize()) - 1)
    return np.array([fixed.TransformContinuousIndexToPhysicalPoint(i.tolist()) for i in index])


def field_transform(path) -> sitk.DisplacementFieldTransform:
    return sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64))


def test_initial_transform_is_in_every_exported_result(rigid_case, with_initial):
    before = np.linalg.norm(sitk.GetArrayFromImage(sitk.ReadImage(rigid_case["truth"])), axis=-1)
    assert before[rigid_case["body"]].mean() > 5.0  # the offset the model alone could not bridge
    tre = tre_mm(rigid_case, with_initial)
    assert tre.mean() < 0.5 and np.percentile(tre, 95) < 1.0, (tre.mean(), np.percentile(tre, 95))
    # warped.nii.gz is the ORIGINAL moving image resampled through the composed field (one interpolation).
    fixed = sitk.ReadImage(rigid_case["fixed"], sitk.sitkFloat32)
    moving = sitk.ReadImage(rigid_case["moving"], sitk.sitkFloat32)
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(with_initial / "warped.nii.gz")))
    again = sitk.Resample(
        moving, fixed, field_transform(with_initial / "displacement.nii.gz"), sitk.sitkLinear, -1000.0
    )
    np.testing.assert_allclose(sitk.GetArrayFromImage(again), warped, atol=0.51)  # warped: whole HU
    # and it is (nearly) the moving image pulled through the truth itself
    truth = sitk.Resample(moving, fixed, rigid_case["transform"], sitk.sitkLinear, -1000.0)
    gap = np.abs(sitk.GetArrayFromImage(truth) - warped)[rigid_case["body"]]
    assert gap.mean() < 5.0, gap.mean()
    report = json.loads((with_initial / "report.json").read_text())
    (part,) = report["initial_transform"]["parts"]
    assert part["kind"] == "Euler3DTransform" and part["rotation_deg"] == pytest.approx(
        ROTATION_DEG, abs=1e-3
    )
    assert not (with_initial / "prealign.tfm").exists()


def test_session_keeps_the_original_moving_image_and_reopens_with_the_transform(rigid_case, with_initial):
    from rso.core.native_grid import native_field

    folder = with_initial / "session"
    assert (folder / "initial_transform.h5").is_file()
    kept = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "moving.nii.gz")))
    given = sitk.GetArrayFromImage(sitk.ReadImage(rigid_case["moving"]))
    assert kept.shape == given.shape and np.abs(kept - given).max() <= 0.5  # stored as whole HU
    session = RegistrationSession.open(folder, device="cpu")
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(with_initial / "displacement.nii.gz")))
    np.testing.assert_allclose(sitk.GetArrayFromImage(native_field(session)), written, atol=1e-3)


def test_rigid_prealignment_recovers_the_offset_without_a_file(rigid_case, prealigned):
    found = sitk.ReadTransform(str(prealigned / "prealign.tfm"))
    points = fixed_points(rigid_case)
    truth = rigid_case["transform"]
    errors = [np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p))) for p in points]
    assert np.mean(errors) < 1.0, np.mean(errors)
    tre = tre_mm(rigid_case, prealigned)
    assert tre.mean() < 1.0, tre.mean()
    report = json.loads((prealigned / "report.json").read_text())
    assert report["initial_transform"]["parts"][0]["kind"] == "Euler3DTransform"
    assert "inverse" not in report and not (prealigned / "inverse_displacement.nii.gz").exists()


def test_inverse_composed_with_the_forward_field_is_near_identity(rigid_case, with_initial):
    fixed = sitk.ReadImage(rigid_case["fixed"])
    inverse = sitk.ReadImage(str(with_initial / "inverse_displacement.nii.gz"))
    moving = sitk.ReadImage(rigid_case["moving"])
    assert inverse.GetSize() == moving.GetSize()  # moving -> fixed, on the moving image's grid
    forward = field_transform(with_initial / "displacement.nii.gz")
    backward = field_transform(with_initial / "inverse_displacement.nii.gz")
    points = fixed_points(rigid_case, count=500, seed=1)
    residual = [
        np.linalg.norm(np.subtract(backward.TransformPoint(forward.TransformPoint(p)), p)) for p in points
    ]
    voxel = min(fixed.GetSpacing())
    assert np.mean(residual) < 0.5 * voxel, np.mean(residual)
    report = json.loads((with_initial / "report.json").read_text())
    assert report["inverse"]["round_trip_residual"]["mean_voxels"] < 0.5


def test_transform_h5_resamples_like_the_displacement_field(rigid_case, with_initial):
    h5 = sitk.ReadTransform(str(with_initial / "transform.h5"))
    field = field_transform(with_initial / "displacement.nii.gz")
    points = fixed_points(rigid_case, count=300, seed=2)
    gaps = [np.linalg.norm(np.subtract(h5.TransformPoint(p), field.TransformPoint(p))) for p in points]
    # transform.h5 holds the model-grid field itself (rso.core.composite); displacement.nii.gz samples it at
    # this test's 4.5 mm voxels and interpolates between them, a few hundredths of a mm off. At 1 mm the
    # two agree within 0.01 mm (test_composite.py).
    assert max(gaps) < 0.05, max(gaps)
    moving = sitk.ReadImage(rigid_case["moving"], sitk.sitkFloat32)
    values = [
        [moving.EvaluateAtPhysicalPoint(t.TransformPoint(p), sitk.sitkLinear) for t in (h5, field)]
        for p in points
        if _inside(moving, field.TransformPoint(p))
    ]
    gaps_hu = np.abs(np.subtract(*np.array(values).T))
    # Those hundredths of a mm on CT edges of several hundred HU per mm (the same at 1 mm: test_composite.py)
    assert len(gaps_hu) > 200 and gaps_hu.mean() < 0.5 and gaps_hu.max() < 2.5, (
        gaps_hu.mean(),
        gaps_hu.max(),
    )


def _inside(image, point) -> bool:
    index = np.array(image.TransformPhysicalPointToContinuousIndex(point))
    return bool(np.all(index > 0) and np.all(index < np.array(image.GetSize()) - 1))


def test_composition_and_inverse_of_a_composite_with_a_field(chest_ct):
    """T0 = affine after a displacement field (an ANTs-style composite): composed and inverted exactly."""
    rng = np.random.default_rng(0)
    small = sitk.Image([12, 12, 10], sitk.sitkVectorFloat64, 3)
    small.SetSpacing((20.0, 20.0, 22.0))
    small.SetOrigin(chest_ct.GetOrigin())
    z, y, x = np.meshgrid(*(np.arange(n) for n in (10, 12, 12)), indexing="ij")
    smooth = np.stack(
        [2.0 * np.sin(x / 3.0), 1.5 * np.cos(y / 4.0) * np.sin(z / 3.0), 2.0 * np.cos(x / 5.0)], -1
    )
    warp = sitk.GetImageFromArray(smooth, isVector=True)  # a registration's field is smooth
    warp.CopyInformation(small)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.02, 0.01, 0.0, -0.01, 0.99, 0.02, 0.0, 0.0, 1.01))
    affine.SetTranslation((3.0, -2.0, 1.0))
    initial = sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(sitk.Image(warp))])
    u = sitk.GetImageFromArray(rng.normal(0.0, 0.5, (10, 12, 12, 3)), isVector=True)
    u.CopyInformation(small)
    composed = composed_field(u, initial)
    point = small.TransformIndexToPhysicalPoint((5, 6, 4))
    through_u = np.add(point, u[5, 6, 4])
    np.testing.assert_allclose(np.add(point, composed[5, 6, 4]), initial.TransformPoint(through_u), atol=1e-9)
    exported = export_transform(u, initial)
    np.testing.assert_allclose(exported.TransformPoint(point), initial.TransformPoint(through_u), atol=1e-9)
    back = inverse_transform(initial)
    inner = small.TransformContinuousIndexToPhysicalPoint((5.3, 6.1, 4.7))
    np.testing.assert_allclose(back.TransformPoint(initial.TransformPoint(inner)), inner, atol=0.05)


def bad_file(folder) -> str:
    path = folder / "broken.tfm"
    path.write_text("#Insight Transform File V1.0\nthis is not a transform\n")
    return str(path)


def flat_file(folder) -> str:
    path = folder / "flat.tfm"
    sitk.WriteTransform(sitk.Euler2DTransform((0.0, 0.0), 0.1, (2.0, 1.0)), str(path))
    return str(path)


def named_file(folder, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


BAD_INPUTS = {
    "unreadable transform": (lambda f, c: ["--initial-transform", bad_file(f)], "could not be read"),
    "not a transform file": (
        lambda f, c: ["--initial-transform", named_file(f, "case.json", "{}")],
        "not an ITK transform file",
    ),
    # ITK's HDF5 probe would print a page of diagnostics first: the signature is checked before it
    "not an HDF5 file": (
        lambda f, c: ["--initial-transform", named_file(f, "t.h5", "garbage")],
        "not an HDF5 file",
    ),
    "2-D transform": (lambda f, c: ["--initial-transform", flat_file(f)], "is 2-D"),
    "missing transform": (lambda f, c: ["--initial-transform", str(f / "none.tfm")], "not found"),
    "both": (lambda f, c: ["--initial-transform", c["initial"], "--prealign", "rigid"], "not both"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_alignment_input_gets_one_line_and_writes_nothing(case, rigid_case, tmp_path, capsys):
    make_args, message = BAD_INPUTS[case]
    out = tmp_path / "out"
    args = ["register", "--fixed", rigid_case["fixed"], "--moving", rigid_case["moving"], "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *make_args(tmp_path, rigid_case), "--iso", "0", *FAST])
    assert exit_info.value.code == EXIT_BAD_INPUT
    errors = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("rso-registration: error:")
    ]
    assert len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


def test_a_transform_that_misses_the_moving_image_is_refused(rigid_case, tmp_path):
    far = sitk.TranslationTransform(3, (0.0, 0.0, 5000.0))
    path = tmp_path / "far.txt"
    sitk.WriteTransform(far, str(path))
    fixed, moving = (sitk.ReadImage(rigid_case[name], sitk.sitkFloat32) for name in ("fixed", "moving"))
    from rso.core.model import ModelConfig, RegistrationNet

    net = RegistrationNet(ModelConfig(channels=TINY_CHANNELS, grid=(32, 64, 64)))
    with pytest.raises(InputError, match="does not overlap the fixed image"):
        session_of(fixed, moving, net, device="cpu", initial_transform=read_initial_transform(path))


def test_inverse_of_a_breathing_field_after_a_rigid_transform(known_pair, rigid_case):
    """u: 12 mm of breathing and a bump, T0 rigid: the inverse's round trip stays within half a voxel."""
    from rso.core.initial import inverse_field, round_trip_residual

    fixed, moving, breathing = known_pair
    forward = composed_field(breathing, rigid_case["transform"])
    backward = inverse_field(breathing, rigid_case["transform"], sitk.ReadImage(rigid_case["moving"]))
    residual = round_trip_residual(forward, backward, fixed)
    assert residual["voxels"] > 10_000 and residual["mean_voxels"] < 0.5, residual
    assert residual["mean_mm"] < 0.2, residual
