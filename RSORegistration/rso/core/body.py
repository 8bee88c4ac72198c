"""The body in a CT, the frame the network sees it in, and the padding around it.

The general model was trained on chests cropped to the body with a margin (``rso.simulation.grid``), so they
fill the model grid. A CT console writes the whole reconstructed field of view, 500 mm across with the table
and air around the body: spread over the same model grid, the chest would reach the network at a scale it
never saw. Where the fixed image reaches well beyond the body, the model grid frames the body instead
(docs/decisions.md, "The network frames the body"). Outside its reconstruction circle a console writes a
constant below any tissue (padding); the simulator made that air for every chest the network learnt from,
and so does a session (``padding_as_air``; docs/decisions.md, "Padding is air").
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import AIR_HU, ModelGrid, nearest_lps_axes

log = logging.getLogger(__name__)

BODY_HU = -500.0  # the skin-air boundary lies between fat (-100 HU) and air (-1000 HU)
BODY_MARGIN_MM = 10.0  # the air kept around the body, as the simulator crops its training chests
# A side of the axial plane is cut only where the image reaches further than this beyond the grown box: the
# network's training phases reach up to 37.5 mm there (cxr's XVI-like phases beside the scan's field of
# view), a CT console's 500 mm field of view 60-125 mm beside a chest. Along the body's axis nothing is cut:
# a CT's scan length is the anatomy's, and a half fan's slices beyond its panel are what it was trained on.
FRAME_SLACK_MM = 40.0
FRAME_SPACING_MM = 2.0  # the body is found on a copy this coarse: quick at 1 mm, and within a voxel of it
OPENING_MM = 3.0  # the opening that detaches the table and blankets (the simulator's body mask too)
# Padding is an image's minimum, held by a large region: often -2048 or -3024 HU. Cone-beam streaks reach
# -3050 HU too, but over many values: at most 0.001 % of a simulated phase's voxels hold its minimum, where a
# tight reconstruction circle pads 1-9 % of a chest's frame (bench/sweep/padding/).
PADDING_BELOW_HU = -1100.0
PADDING_MIN_SHARE = 0.005


def body_frame(image: sitk.Image) -> tuple[list[int], list[int]] | None:
    """ITK index bounds ``(lower, upper)`` (upper exclusive) of the part of a CT ``image`` (HU) the network
    frames: the body's bounding box grown by BODY_MARGIN_MM, cut only in the axial plane, on the sides where
    the image reaches more than FRAME_SLACK_MM beyond the grown box (elsewhere the image's own edge: every
    image the network was trained on keeps its grid). None where no side is cut or no body is found: the
    whole image.

    The body is the largest object above BODY_HU after an opening of OPENING_MM, which detaches the table
    and blankets."""
    coarse = _coarse(image)
    radius = [int(np.ceil(OPENING_MM / s)) for s in coarse.GetSpacing()]
    tissue = sitk.BinaryMorphologicalOpening(sitk.BinaryThreshold(coarse, BODY_HU, 1e12, 1, 0), radius)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(tissue), sortByObjectSize=True)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(labels)
    if not statistics.HasLabel(1):
        return None
    box = statistics.GetBoundingBox(1)  # (x, y, z) start, then (x, y, z) size, in coarse voxels
    start, size = np.array(box[:3], float), np.array(box[3:], float)
    corners = [start - 0.5 + size * np.array(c) for c in np.ndindex(2, 2, 2)]  # the box's cell edges
    points = [coarse.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in points])
    spacing, extent = np.array(image.GetSpacing()), np.array(image.GetSize())
    margin = BODY_MARGIN_MM / spacing
    low = np.floor(index.min(axis=0) + 0.5 - margin).astype(int)  # voxels whose cells reach the box
    high = np.ceil(index.max(axis=0) + 0.5 + margin).astype(int)
    slack = FRAME_SLACK_MM / spacing
    axial = np.ones(3, bool)
    axial[nearest_lps_axes(image.GetDirection())[0][2]] = False  # the index axis nearest S
    cut_low, cut_high = axial & (low > slack), axial & (extent - high > slack)
    if not (cut_low.any() or cut_high.any()):
        return None
    lower = np.where(cut_low, low, 0)
    upper = np.where(cut_high, high, extent)
    return lower.tolist(), upper.tolist()


def _coarse(image: sitk.Image) -> sitk.Image:
    """``image`` on its own box and direction at FRAME_SPACING_MM or its own spacing, whichever is coarser
    (linear, air outside)."""
    spacing = np.maximum(np.array(image.GetSpacing()), FRAME_SPACING_MM)
    size = np.maximum(np.round(np.array(image.GetSize()) * image.GetSpacing() / spacing), 1).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # The coarse voxels' cells span the image's cells: the first centre half a coarse voxel in.
    origin = np.array(image.GetOrigin()) + direction @ ((spacing - np.array(image.GetSpacing())) / 2)
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin(origin.tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)


def framed_grid(image: sitk.Image, shape, hu: bool) -> ModelGrid:
    """The model grid of ``shape`` voxels for the fixed ``image``: on its body's frame (``body_frame``)
    where it is CT in HU (``hu``), else on the whole image (no HU threshold finds the body in other
    images)."""
    region = body_frame(image) if hu else None
    grid = ModelGrid.covering(image, shape, region)
    if region is not None:
        log.info(
            "model grid: the body's box with a %g mm margin, voxels %s..%s of the fixed image's %s "
            "(the network was trained on chests that fill its grid)",
            BODY_MARGIN_MM,
            region[0],
            [n - 1 for n in region[1]],
            list(image.GetSize()),
        )
    return grid


def padding_as_air(image: sitk.Image, what: str) -> sitk.Image:
    """A CT ``image`` (HU, float32) with its padding as air (AIR_HU): the voxels within half an HU of its
    minimum, where that minimum lies below PADDING_BELOW_HU and they are at least PADDING_MIN_SHARE of the
    image. ``image`` itself where it has none. ``what`` names it in the log."""
    values = sitk.GetArrayViewFromImage(image)
    low = float(values.min())
    if low >= PADDING_BELOW_HU:
        return image
    padding = values <= low + 0.5
    share = float(padding.mean())
    if share < PADDING_MIN_SHARE:
        return image
    array = sitk.GetArrayFromImage(image)
    array[padding] = AIR_HU
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    log.info(
        "%s: %.1f %% of its voxels hold %g, a constant below any tissue: padding outside the scanner's "
        "field of view, air (%g HU) for the registration",
        what,
        100 * share,
        low,
        AIR_HU,
    )
    return result
