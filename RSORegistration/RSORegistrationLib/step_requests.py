"""The arguments of the requests that need more than a number: RSO on a region, carrying contours.

Each is checked here, before the queue: an empty or outside box, or contours that cannot be read,
fail with a one-line InputError and nothing is sent.
"""

from __future__ import annotations

from pathlib import Path

from rso.core.boxes import box_from_ras
from rso.core.geometry import ModelGrid
from rso.settings import RSOSettings

from .engine_queue import StepRequest
from .parameters import RunParameters, settings_arguments
from .roi import box_argument
from .segmentations import write_label_input


def rso_request(
    params: RunParameters,
    grid: ModelGrid | None,
    region,
    iterations: int | None = None,
    mode: str | None = None,
    composition: str | None = None,
) -> StepRequest:
    """RSO inside ``region`` (an ROI node or [R1, A1, S1, R2, A2, S2], RAS mm); None takes the parameters'.

    ``grid``: the session's model grid, when known, to refuse a box with no voxel of it.
    """
    box_ras = box_argument(region)
    if grid is not None:
        box_from_ras(grid, box_ras)  # an empty or outside box fails here, before the queue
    args = {"box_ras": box_ras, **settings_arguments(params, RSOSettings)}
    iterations = None if iterations is None else int(iterations)
    given = {"iterations": iterations, "mode": mode, "compose": composition}
    args.update({key: value for key, value in given.items() if value is not None})
    return StepRequest("rso", args, region=region if hasattr(region, "GetID") else None)


def labels_request(params: RunParameters, source) -> StepRequest:
    """Carry ``source`` (a segmentation or a label-map volume on the moving volume): written beside the
    session folder as a label image the engine reads."""
    name = f"{source.GetID() if source else 'none'}.seg.nrrd"
    path = write_label_input(source, params.movingVolume, Path(params.sessionFolder).parent / "labels" / name)
    return StepRequest("labels", {"labels": str(path)}, region=source)
