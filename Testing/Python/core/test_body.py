"""The network frames the body (rso.core.body): a CT written on a console's whole field of view reaches the
network as the chests it was trained on, and every image the simulator makes keeps its whole grid; a
console's padding is air, and cone-beam streaks are not padding."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import session_of

from rso.core.body import BODY_HU, BODY_MARGIN_MM, FRAME_SPACING_MM, body_frame, padding_as_air
from rso.simulation.anatomy import body_mask
from rso.simulation.grid import working_ct

CONSOLE_FIELD_OF_VIEW_MM = 500.0
PADDING_HU = -2048.0  # what many CT scanners write outside the reconstruction circle
TIGHT_PADDING_HU = -3024.0  # what others write


def on_a_console(image: sitk.Image, field_of_view_mm: float = CONSOLE_FIELD_OF_VIEW_MM) -> sitk.Image:
    """``image`` (cropped to the body) widened in the axial plane to a CT console's field of view (air
    around the body) and padded outside the reconstruction circle; the voxels themselves unchanged."""
    spacing, size = np.array(image.GetSpacing()), np.array(image.GetSize())
    pad = np.maximum(np.ceil((field_of_view_mm / spacing[:2] - size[:2]) / 2), 0).astype(int)
    widened = sitk.ConstantPad(image, [*pad.tolist(), 0], [*pad.tolist(), 0], -1000.0)
    array = sitk.GetArrayFromImage(widened)
    y, x = ((np.arange(n) - (n - 1) / 2) * s for n, s in zip(array.shape[1:], spacing[1::-1]))
    array[:, np.hypot(*np.meshgrid(y, x, indexing="ij")) > field_of_view_mm / 2] = PADDING_HU
    padded = sitk.GetImageFromArray(array)
    padded.CopyInformation(widened)
    return padded


def padded_beside_body(image: sitk.Image, body_of: sitk.Image, clearance_mm: float = 5.0) -> sitk.Image:
    """``image`` with TIGHT_PADDING_HU outside the axial circle about its centre that reaches ``clearance_mm``
    beyond the body of ``body_of``: a console whose reconstruction circle the body nearly fills."""
    array = sitk.GetArrayFromImage(image)
    spacing = np.array(image.GetSpacing())
    y, x = ((np.arange(n) - (n - 1) / 2) * s for n, s in zip(array.shape[1:], spacing[1::-1]))
    radius = np.hypot(*np.meshgrid(y, x, indexing="ij"))
    tissue = sitk.BinaryMorphologicalOpening(sitk.BinaryThreshold(body_of, BODY_HU, 1e4, 1, 0), [1, 1, 1])
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(tissue), sortByObjectSize=True) == 1
    body = sitk.GetArrayFromImage(largest).any(axis=0)  # not filled: body_mask fills a cut edge's slice
    array[:, radius > radius[body].max() + clearance_mm] = TIGHT_PADDING_HU
    padded = sitk.GetImageFromArray(array)
    padded.CopyInformation(image)
    return padded


@pytest.fixture(scope="module")
def cropped_pair(known_pair):
    """The known pair and its truth cropped as the simulator crops its chests (the body + 10 mm)."""
    fixed = working_ct(known_pair[0], spacing_mm=None)
    lower = fixed.GetOrigin()
    index = known_pair[0].TransformPhysicalPointToIndex(lower)
    return tuple(sitk.RegionOfInterest(image, fixed.GetSize(), index) for image in known_pair)


def test_a_chest_cropped_as_the_simulator_crops_keeps_its_whole_grid(cropped_pair):
    assert body_frame(cropped_pair[0]) is None


def test_a_console_image_is_framed_to_its_body_and_keeps_its_length(cropped_pair):
    console = on_a_console(cropped_pair[0])
    lower, upper = body_frame(console)
    assert lower[2] == 0 and upper[2] == console.GetSize()[2]  # a CT's scan length is the anatomy's
    body = np.nonzero(sitk.GetArrayFromImage(body_mask(console)))  # (z, y, x) voxel indices
    low, high = np.array([b.min() for b in body[::-1]]), np.array([b.max() for b in body[::-1]])
    reach = np.ceil((BODY_MARGIN_MM + FRAME_SPACING_MM) / np.array(console.GetSpacing())) + 1
    assert np.all(lower[:2] <= low[:2]) and np.all(upper[:2] > high[:2])  # the whole body ...
    assert np.all(lower[:2] >= low[:2] - reach[:2]) and np.all(
        upper[:2] <= high[:2] + 1 + reach[:2]
    )  # ... little else


def test_the_network_sees_the_same_chest_whatever_field_of_view_the_console_wrote(cropped_pair):
    """The bundled model on the pair as consoles write it with 500 and 600 mm fields of view: the same model
    grid and the same field, where the whole image on the model grid gave each its own scale (a training
    pair lost 4.4 mm at 500 mm: bench/sweep/orientation/)."""
    from rso.core.workflow import build_network
    from rso.settings import EngineSettings

    fixed, moving, truth = cropped_pair
    grids, tre = [], []
    for field_of_view in (500.0, 600.0):
        images = (on_a_console(fixed, field_of_view), on_a_console(moving, field_of_view))
        net, _ = build_network(EngineSettings())
        session = session_of(*images, net, truth=truth, device="cpu", precision="fp32")
        tre.append(session.general().metrics["tre_mm"]["mean"])
        grids.append(session.grid)
    assert grids[0].shape == grids[1].shape and grids[0].direction == grids[1].direction
    np.testing.assert_allclose(grids[1].origin, grids[0].origin, atol=1e-6)
    np.testing.assert_allclose(grids[1].spacing, grids[0].spacing, atol=1e-9)
    assert tre[1] == pytest.approx(tre[0], abs=1e-3)


def test_padding_becomes_air_and_nothing_else(cropped_pair):
    fixed = cropped_pair[0]
    padded = padded_beside_body(fixed, fixed)
    before, after = sitk.GetArrayFromImage(padded), sitk.GetArrayFromImage(padding_as_air(padded, "fixed"))
    outside = before == TIGHT_PADDING_HU
    assert outside.mean() > 0.01
    assert np.all(after[outside] == -1000.0)
    np.testing.assert_array_equal(after[~outside], before[~outside])


def test_cone_beam_streaks_and_a_sliver_of_padding_are_not_padding():
    """Half-fan FDK streaks reach -3050 HU over many values; a constant held by too few voxels is not a
    reconstruction circle: both images come back as they are."""
    rng = np.random.default_rng(0)
    streaked = np.round(rng.normal(-1000.0, 400.0, (20, 60, 60))).astype(np.float32)
    sliver = np.full((20, 60, 60), -1000.0, np.float32)
    sliver[:, 0, :10] = TIGHT_PADDING_HU  # 0.3 % of the voxels
    for array in (streaked, sliver):
        image = sitk.GetImageFromArray(array)
        assert padding_as_air(image, "image") is image


def test_the_network_sees_the_same_chest_where_the_body_nearly_fills_the_circle(cropped_pair):
    """The bundled model on the pair padded with -3024 HU 5 mm beyond the body (1.2 % of the voxels): within
    0.03 mm of the field without the padding, where the code before moved it by up to 1.48 mm (a training
    pair lost 0.43 mm of TRE: bench/sweep/padding/)."""
    from rso.core.workflow import build_network
    from rso.settings import EngineSettings

    fixed, moving, truth = cropped_pair
    fields, tre = [], []
    for images in ((fixed, moving), (padded_beside_body(fixed, fixed), padded_beside_body(moving, fixed))):
        net, _ = build_network(EngineSettings())
        session = session_of(*images, net, truth=truth, device="cpu", precision="fp32")
        tre.append(session.general().metrics["tre_mm"]["mean"])
        fields.append(session.state.field)
    assert np.abs(fields[1] - fields[0]).max() < 0.1
    assert tre[1] == pytest.approx(tre[0], abs=1e-3)
