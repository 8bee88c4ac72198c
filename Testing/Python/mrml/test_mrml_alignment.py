"""Where a registration starts and what it fits, through the module's logic on a real MRML scene: the
initial transform node reaches the engine as ITK writes it (fixed -> moving points) and the output transform
includes it; the rigid pre-alignment and the fit mask reach the worker; a transform and a pre-alignment
together are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest_slicer import SMALL_GRID, TINY_CHANNELS, demo  # noqa: F401  (fixtures)

from rso.core.geometry import lps_to_ras
from rso.core.store import input_path
from rso.errors import InputError
from RSORegistrationLib.backends import InProcessBackend
from RSORegistrationLib.headless import new_scene
from RSORegistrationLib.logic import RegistrationLogic
from RSORegistrationLib.parameters import RunParameters
from RSORegistrationLib.session_setup import apply_changes, open_arguments
from RSORegistrationLib.transforms import field_from_transform_node, grid_transform_from_field
from RSORegistrationLib.volumes import array_from_volume, volume_from_image

SETTINGS = dict(modelChannels=TINY_CHANNELS, gridShape=SMALL_GRID, device="cpu", seed=3)
# T0 (mm): fixed point x -> moving point x + SHIFT_LPS; whole voxels, so that resampling is exact
SHIFT_LPS = np.array([6.0, -3.0, 3.0])
STEP_S = 120


def shifted_pair(demo):
    """(fixed, moving): the phantom's fixed image, and the same image moved so that moving(x + SHIFT) =
    fixed(x): no motion but the shift."""
    fixed = demo.fixed
    background = float(sitk.GetArrayViewFromImage(fixed).min())
    back = sitk.TranslationTransform(3, (-SHIFT_LPS).tolist())  # moving(y) = fixed(y - SHIFT)
    return fixed, sitk.Resample(fixed, fixed, back, sitk.sitkLinear, background)


def linear_t0(scene):
    """T0 as Slicer's registrations leave it ("moving to fixed"): its to-parent transform carries the moving
    volume onto the fixed one (y -> y - SHIFT); its from-parent transform is the ITK one (x -> x + SHIFT)."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T0")
    matrix = vtk.vtkMatrix4x4()
    for axis, value in enumerate(lps_to_ras(-SHIFT_LPS)):
        matrix.SetElement(axis, 3, float(value))
    node.SetMatrixTransformToParent(matrix)
    return node


def grid_t0(scene, fixed: sitk.Image):
    """T0 as a grid transform: a constant fixed -> moving field on the fixed image's grid (LPS mm)."""
    from RSORegistrationLib.transforms import transform_node_from_field

    shape = fixed.GetSize()[::-1]
    field = sitk.GetImageFromArray(np.broadcast_to(SHIFT_LPS, (*shape, 3)).copy(), isVector=True)
    field.CopyInformation(fixed)
    return transform_node_from_field(scene, field, "T0 grid")


def pair_nodes(scene, fixed: sitk.Image, moving: sitk.Image):
    return volume_from_image(scene, fixed, "f"), volume_from_image(scene, moving, "m")


# --------------------------------------------------------------------- without the engine
@pytest.mark.parametrize("kind", ["linear", "grid"])
def test_the_initial_transform_is_written_as_itk_reads_it(demo, tmp_path, kind):
    app = new_scene()
    fixed, moving = shifted_pair(demo)
    fixed_node, moving_node = pair_nodes(app.scene, fixed, moving)
    t0 = linear_t0(app.scene) if kind == "linear" else grid_t0(app.scene, fixed)
    params = RunParameters(fixedVolume=fixed_node, movingVolume=moving_node, initialTransform=t0, **SETTINGS)
    args = open_arguments(apply_changes(params, {}), tmp_path)
    assert args["prealign"] is None and args["fit_mask"] is None
    written = sitk.ReadTransform(args["initial_transform"])
    point = np.array(fixed.TransformIndexToPhysicalPoint((20, 30, 10)))
    np.testing.assert_allclose(written.TransformPoint(point.tolist()), point + SHIFT_LPS, atol=1e-6)


def test_a_transform_the_engine_cannot_read_is_refused_in_one_line(demo, tmp_path):
    app = new_scene()
    fixed_node, moving_node = pair_nodes(app.scene, *shifted_pair(demo))
    params = RunParameters(fixedVolume=fixed_node, movingVolume=moving_node, **SETTINGS)
    inverse = app.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "inverted")
    inverse.SetAndObserveTransformToParent(
        grid_transform_from_field(field_from_transform_node(grid_t0(app.scene, demo.fixed)))
    )
    nested = linear_t0(app.scene)
    nested.SetAndObserveTransformNodeID(linear_t0(app.scene).GetID())
    for node, expected in ((inverse, "only Slicer reads"), (nested, "harden it first")):
        params.initialTransform = node
        with pytest.raises(InputError, match=expected) as refused:
            open_arguments(params, tmp_path)
        assert "\n" not in str(refused.value)


def test_an_initial_transform_and_a_prealignment_are_refused_together(demo, tmp_path):
    app = new_scene()
    fixed_node, moving_node = pair_nodes(app.scene, *shifted_pair(demo))
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path)
    with pytest.raises(InputError, match="initial transform or a rigid pre-alignment, not both"):
        logic.run(
            fixed_node, moving_node, prealign="rigid", initialTransform=linear_t0(app.scene), **SETTINGS
        )
    with pytest.raises(InputError, match="prealign must be one of"):
        logic.open_session(fixedVolume=fixed_node, movingVolume=moving_node, prealign="affine")
    assert not logic.busy and not (tmp_path / "sessions").exists()  # nothing written, nothing started
    logic.close()


def test_a_transformed_fit_mask_is_refused(demo, tmp_path):
    app = new_scene()
    fixed_node, moving_node = pair_nodes(app.scene, *shifted_pair(demo))
    mask = volume_from_image(app.scene, demo.fixed > -500, "mask", node_class="vtkMRMLLabelMapVolumeNode")
    mask.SetAndObserveTransformNodeID(linear_t0(app.scene).GetID())
    params = RunParameters(fixedVolume=fixed_node, movingVolume=moving_node, fitMask=mask)
    with pytest.raises(InputError, match="'mask' is under transform 'T0'"):
        apply_changes(params, {})


# ------------------------------------------------------------------------- with the engine
def registered(scene, tmp_path, fixed_node, moving_node, **changes):
    logic = RegistrationLogic(scene, InProcessBackend, cache_dir=tmp_path)
    history = logic.run(fixed_node, moving_node, timeout=STEP_S, **{**SETTINGS, **changes})
    return logic, history


def interior(array: np.ndarray) -> np.ndarray:
    """(z, y, x[, 3]) -> the part more than the shift away from every face (where no padding shows)."""
    return array[3:-3, 4:-4, 4:-4]


@pytest.mark.parametrize("kind", ["linear", "grid"])
def test_a_known_shift_given_as_the_initial_transform_is_in_the_output(demo, tmp_path, kind):
    """General model only (an untrained, almost-zero network): the output transform is T0, within a voxel,
    and the warped volume lines up with the fixed one."""
    app = new_scene()
    fixed, moving = shifted_pair(demo)
    fixed_node, moving_node = pair_nodes(app.scene, fixed, moving)
    t0 = linear_t0(app.scene) if kind == "linear" else grid_t0(app.scene, fixed)
    if kind == "linear":
        moving_node.SetAndObserveTransformNodeID(t0.GetID())  # shown aligned: allowed, T0 is given anyway
    logic, history = registered(
        app.scene, tmp_path, fixed_node, moving_node, isoIterations=0, initialTransform=t0
    )
    try:
        assert [record["kind"] for record in history] == ["general"]
        params = logic.parameters()
        assert input_path(params.sessionFolder, "initial_transform").is_file()  # the worker got it
        field = sitk.GetArrayFromImage(field_from_transform_node(params.outputTransform))  # LPS mm
        error = np.linalg.norm(interior(field) - SHIFT_LPS, axis=-1)
        assert error.max() < min(fixed.GetSpacing()), error.max()
        assert moving_node.GetParentTransformNode() is params.outputTransform and t0.GetScene() is not None
        fixed_voxels = interior(array_from_volume(fixed_node))
        before = np.sqrt(np.mean((interior(array_from_volume(moving_node)) - fixed_voxels) ** 2))
        after = np.sqrt(np.mean((interior(array_from_volume(params.warpedVolume)) - fixed_voxels) ** 2))
        assert after < 0.01 * before, (after, before)
    finally:
        logic.close()


def test_the_rigid_prealignment_reaches_the_worker(demo, tmp_path):
    app = new_scene()
    fixed, moving = shifted_pair(demo)
    logic, history = registered(
        app.scene, tmp_path, *pair_nodes(app.scene, fixed, moving), isoIterations=0, prealign="rigid"
    )
    try:
        field = sitk.GetArrayFromImage(field_from_transform_node(logic.parameters().outputTransform))
        assert np.linalg.norm(interior(field) - SHIFT_LPS, axis=-1).mean() < 1.0  # found by the engine
        assert input_path(logic.parameters().sessionFolder, "initial_transform").is_file()
    finally:
        logic.close()


def test_the_fit_mask_reaches_the_worker_and_changes_iso(demo, tmp_path):
    app = new_scene()
    fixed_node, moving_node = pair_nodes(app.scene, demo.fixed, demo.moving)
    size = np.array(demo.fixed.GetSize()[::-1])
    inside = np.zeros(size, np.uint8)
    inside[:, : size[1] // 2] = 1  # the anterior half (LPS y: the first rows)
    mask_image = sitk.GetImageFromArray(inside)
    mask_image.CopyInformation(demo.fixed)
    mask = volume_from_image(app.scene, mask_image, "half", node_class="vtkMRMLLabelMapVolumeNode")
    runs = {}
    for name, fit_mask in (("without", None), ("with", mask)):
        logic, history = registered(
            app.scene,
            tmp_path / name,
            fixed_node,
            moving_node,
            isoIterations=2,
            isoGuard=False,  # ISO's field is kept, so that the fit mask's effect on it shows
            fitMask=fit_mask,
        )
        folder = Path(logic.parameters().sessionFolder)
        runs[name] = (history, field_from_transform_node(logic.parameters().outputTransform), folder)
        logic.close()
    assert not input_path(runs["without"][2], "fit_mask").is_file()
    written = sitk.ReadImage(str(input_path(runs["with"][2], "fit_mask")))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(written) != 0, inside.astype(bool))
    (plain, plain_field, _), (masked, masked_field, _) = runs["without"], runs["with"]
    assert plain[1]["kind"] == masked[1]["kind"] == "iso"
    assert not np.allclose(plain[1]["loss"], masked[1]["loss"])  # ISO measured another similarity
    change = np.abs(sitk.GetArrayViewFromImage(masked_field) - sitk.GetArrayViewFromImage(plain_field))
    assert change.max() > 1e-3
