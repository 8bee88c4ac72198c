"""The geometry proof (docs/architecture.md §3): Slicer's own resampling through the exported
transform equals the engine's warped image, for the in-memory grid transform and for the
displacement.nii.gz file read by Slicer's transform storage node; a step's field on the grid already
shown is written into that grid in place."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import session_of
from conftest_slicer import TINY_CHANNELS, app, demo, oblique_image  # noqa: F401  (fixtures)

from rso.core.imageio import write_displacement_field
from rso.core.native_grid import warp_native
from rso.core.results import write_results
from rso.errors import InputError
from rso.settings import ISOSettings
from RSORegistrationLib.transforms import (
    VtkMessages,
    field_from_transform_node,
    place_under,
    read_transform_file,
    reload_transform_file,
    transform_node_from_field,
)
from RSORegistrationLib.volumes import array_from_volume, volume_from_image, voxels_view


def analytic_field(reference: sitk.Image) -> sitk.Image:
    """A rotation + translation + a sinusoid (several mm): every component and axis matters."""
    rigid = sitk.Euler3DTransform((0, 0, 0), 0.05, -0.08, 0.1, (3.0, -2.0, 4.0))
    field = sitk.TransformToDisplacementField(
        rigid,
        sitk.sitkVectorFloat64,
        reference.GetSize(),
        reference.GetOrigin(),
        reference.GetSpacing(),
        reference.GetDirection(),
    )
    vectors = sitk.GetArrayFromImage(field)
    k, j, i = np.meshgrid(*[np.arange(n) for n in reference.GetSize()[::-1]], indexing="ij")
    vectors[..., 0] += 3.0 * np.sin(i / 4.0)
    vectors[..., 2] += 2.0 * np.cos(j / 5.0 + k / 3.0)
    result = sitk.GetImageFromArray(vectors, isVector=True)
    result.CopyInformation(field)
    return result


@pytest.fixture
def oblique_case():
    """An oblique fixed grid, a moving image on another grid, and the engine's warp of it."""
    fixed = oblique_image(size=(24, 20, 16), spacing=(2.0, 2.5, 3.0), origin=(5.0, -10.0, 20.0), seed=3)
    moving = oblique_image(size=(40, 36, 30), spacing=(2.0, 2.0, 2.5), origin=(-30.0, -50.0, -10.0), seed=4)
    moving.SetDirection(np.eye(3).ravel().tolist())
    field = analytic_field(fixed)
    return fixed, moving, field, warp_native(moving, field, fixed)


def slicer_resample(app, fixed_node, moving_node, transform_node) -> np.ndarray:
    place_under(moving_node, transform_node)
    output = app.volumes_logic.ResampleVolumeToReferenceVolume(moving_node, fixed_node)
    return array_from_volume(output)


def assert_matches_engine(resampled: np.ndarray, warped: sitk.Image, atol: float):
    engine = sitk.GetArrayFromImage(warped)
    inside = engine != -1000.0  # the engine pads with air, Slicer with 0: compare where both sample
    assert inside.mean() > 0.3, "too few samples inside the moving image to prove anything"
    np.testing.assert_allclose(resampled[inside], engine[inside], atol=atol)
    assert np.abs(engine[inside]).max() > 50.0  # the images are not flat


def test_grid_transform_node_resamples_like_the_engine(app, oblique_case):
    fixed, moving, field, warped = oblique_case
    fixed_node = volume_from_image(app.scene, fixed, "fixed")
    moving_node = volume_from_image(app.scene, moving, "moving")
    transform = transform_node_from_field(app.scene, field, "engine field")
    assert transform.GetTransformFromParent().IsA("vtkOrientedGridTransform")
    resampled = slicer_resample(app, fixed_node, moving_node, transform)
    assert_matches_engine(resampled, warped, atol=0.05)
    # Without the transform Slicer's resampling is clearly different: the test has teeth.
    moving_node.SetAndObserveTransformNodeID(None)
    plain = array_from_volume(app.volumes_logic.ResampleVolumeToReferenceVolume(moving_node, fixed_node))
    assert np.abs(plain - resampled).max() > 50.0


def test_displacement_file_read_by_slicer_resamples_like_the_engine_without_warnings(
    app, oblique_case, tmp_path
):
    fixed, moving, field, warped = oblique_case
    path = write_displacement_field(field, tmp_path / "displacement.nii.gz")
    with VtkMessages() as messages:
        transform = read_transform_file(app.scene, path, "from file")
    assert messages.messages == []
    resampled = slicer_resample(
        app,
        volume_from_image(app.scene, fixed, "fixed"),
        volume_from_image(app.scene, moving, "moving"),
        transform,
    )
    assert_matches_engine(resampled, warped, atol=0.05)
    back = field_from_transform_node(transform)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(field), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), field.GetDirection(), atol=1e-6)


def test_field_round_trips_through_the_grid_transform(app, oblique_case):
    field = oblique_case[2]
    back = field_from_transform_node(transform_node_from_field(app.scene, field, "field"))
    np.testing.assert_allclose(
        sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(field), atol=1e-12
    )
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(back, getter)(), getattr(field, getter)(), atol=1e-9)


def test_a_nifti_field_without_its_intent_code_is_noticed(app, oblique_case, tmp_path, caplog):
    """The warning check is real: a plain vector NIfTI (no intent 1006) makes Slicer complain."""
    path = tmp_path / "plain.nii.gz"
    sitk.WriteImage(sitk.Cast(oblique_case[2], sitk.sitkVectorFloat32), str(path))
    read_transform_file(app.scene, path, "plain")
    assert any("plain.nii.gz" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_session_export_is_what_slicer_shows(app, demo, tmp_path):
    """A real session (tiny network, a few ISO steps): its written files agree with Slicer's view."""
    import torch

    from rso.core.model import ModelConfig, RegistrationNet

    torch.manual_seed(0)
    net = RegistrationNet(ModelConfig(channels=tuple(int(c) for c in TINY_CHANNELS.split(","))))
    session = session_of(demo.fixed, demo.moving, net, grid=(16, 32, 32), device="cpu")
    session.iso(
        ISOSettings(iterations=3, learning_rate=0.02)
    )  # a large step size: a visibly non-identity field in 3 steps
    assert np.abs(session.field_mm).max() > 0.3
    paths = write_results(session, tmp_path, figure=False)
    with VtkMessages() as messages:
        transform = read_transform_file(app.scene, paths["displacement"], "session field")
    assert messages.messages == []
    fixed_node = volume_from_image(app.scene, demo.fixed, "fixed")
    resampled = slicer_resample(
        app, fixed_node, volume_from_image(app.scene, demo.moving, "moving"), transform
    )
    assert_matches_engine(resampled, sitk.ReadImage(str(paths["warped"])), atol=0.51)  # warped: whole HU


def test_moving_volume_under_another_transform_is_refused(app, oblique_case):
    moving_node = volume_from_image(app.scene, oblique_case[1], "moving")
    other = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "user transform")
    moving_node.SetAndObserveTransformNodeID(other.GetID())
    with pytest.raises(InputError, match="harden"):
        place_under(moving_node, transform_node_from_field(app.scene, oblique_case[2], "field"))


def another_field(field: sitk.Image, scale: float, shift_mm: float) -> sitk.Image:
    """The field scaled and shifted: other values on the same grid."""
    changed = sitk.GetImageFromArray(sitk.GetArrayFromImage(field) * scale + shift_mm, isVector=True)
    changed.CopyInformation(field)
    return changed


def assert_same_transform(node, fresh, points):
    """The node's grid holds what Slicer reads from the file, and maps points alike."""
    held, read = (n.GetTransformFromParent() for n in (node, fresh))
    np.testing.assert_allclose(
        voxels_view(held.GetDisplacementGrid()), voxels_view(read.GetDisplacementGrid()), rtol=0, atol=1e-5
    )
    for getter in ("GetDimensions", "GetSpacing", "GetOrigin"):
        held_value, read_value = (getattr(t.GetDisplacementGrid(), getter)() for t in (held, read))
        np.testing.assert_allclose(held_value, read_value, atol=1e-9)
    for point in points:
        np.testing.assert_allclose(held.TransformPoint(point), read.TransformPoint(point), atol=1e-4)


def test_a_whole_refresh_on_the_grid_shown_writes_into_it_in_place(app, oblique_case, tmp_path):
    """Each whole step's field on the grid the output transform already holds goes into that grid: the
    same vtkImageData (a clinical grid is 1.2 GB of doubles, never held twice), equal to Slicer's own
    reading of the file, and the views are told."""
    field = oblique_case[2]
    fields = [field, another_field(field, -0.6, 1.5), another_field(field, 0.3, -2.0)]
    paths = [write_displacement_field(f, tmp_path / f"step{n}.nii") for n, f in enumerate(fields)]
    node = reload_transform_file(app.scene, paths[0], "output")  # no grid yet: Slicer reads the file
    grid = node.GetTransformFromParent().GetDisplacementGrid()
    told = []
    node.AddObserver(node.TransformModifiedEvent, lambda *_: told.append(1))
    centre = np.array(grid.GetCenter())
    points = [centre.tolist(), (centre + (7.0, -5.0, 3.0)).tolist(), (centre - (4.0, 6.0, -8.0)).tolist()]
    for n, path in enumerate(paths[1:], start=1):
        stamp = node.GetTransformFromParent().GetMTime()
        assert reload_transform_file(app.scene, path, "output", node) is node
        assert node.GetTransformFromParent().GetDisplacementGrid() is grid  # in place
        assert_same_transform(node, read_transform_file(app.scene, path, "fresh"), points)
        # The views are told: the event, and a newer transform for VTK's pipelines (reslicing) to see.
        assert len(told) >= n and node.GetTransformFromParent().GetMTime() > stamp
    # The test has teeth: the refreshed values are not the first step's.
    first = voxels_view(
        read_transform_file(app.scene, paths[0], "first").GetTransformFromParent().GetDisplacementGrid()
    )
    assert np.abs(voxels_view(grid) - first).max() > 1.0


def test_the_in_place_refresh_makes_no_copy_of_the_grid(app, tmp_path):
    """Python's side of a refresh (numpy's temporaries, traced) stays far below one copy of the grid: the
    file's float32 voxels go into the grid's doubles without a whole-volume float64 array on the way."""
    import tracemalloc

    vectors = np.random.default_rng(0).normal(size=(48, 80, 96, 3)).astype(np.float32)
    field = sitk.GetImageFromArray(vectors, isVector=True)
    field.SetSpacing((1.5, 1.5, 2.0))
    node = reload_transform_file(app.scene, write_displacement_field(field, tmp_path / "a.nii"), "output")
    grid = node.GetTransformFromParent().GetDisplacementGrid()
    path = write_displacement_field(another_field(field, -1.0, 0.5), tmp_path / "b.nii")
    tracemalloc.start()
    try:
        reload_transform_file(app.scene, path, "output", node)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert node.GetTransformFromParent().GetDisplacementGrid() is grid
    assert peak < voxels_view(grid).nbytes / 20  # the grid: 8.8 MB of doubles


@pytest.mark.parametrize("change", ["size", "origin", "spacing", "direction"])
def test_a_field_on_another_grid_is_read_anew(app, oblique_case, tmp_path, change):
    field = oblique_case[2]
    node = reload_transform_file(app.scene, write_displacement_field(field, tmp_path / "a.nii"), "output")
    grid = node.GetTransformFromParent().GetDisplacementGrid()
    other = another_field(field, 0.5, 1.0)
    if change == "size":
        other = other[:, :, 1:]
    elif change == "origin":
        other.SetOrigin((np.array(field.GetOrigin()) + (0.0, 2.0, 0.0)).tolist())
    elif change == "spacing":
        other.SetSpacing((np.array(field.GetSpacing()) * 1.1).tolist())
    else:
        other.SetDirection(sitk.VersorTransform((0.0, 0.0, 1.0), 0.3).GetMatrix())
    path = write_displacement_field(other, tmp_path / "b.nii")
    assert reload_transform_file(app.scene, path, "output", node) is node
    assert node.GetTransformFromParent().GetDisplacementGrid() is not grid  # Slicer read it afresh
    centre = np.array(node.GetTransformFromParent().GetDisplacementGrid().GetCenter())
    assert_same_transform(node, read_transform_file(app.scene, path, "fresh"), [centre.tolist()])


def test_a_grid_made_from_a_field_outlives_it_and_holds_one_copy(app, oblique_case):
    """The grid borrows its one RAS copy of the field (numpy_support keeps it alive): after the field and
    every Python name of the array are gone and the collector has run, the node still holds the field."""
    import gc
    import tracemalloc

    field = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(48, 80, 96, 3)), isVector=True)
    field.CopyInformation(sitk.Resample(oblique_case[2], field.GetSize()))  # its oblique direction
    expected = sitk.GetArrayFromImage(field)
    tracemalloc.start()
    try:
        node = transform_node_from_field(app.scene, field, "borrowed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * expected.size * 8  # one float64 copy (it was three: two temporaries and VTK's own)
    del field
    gc.collect()
    back = field_from_transform_node(node)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(back), expected, atol=1e-12)
