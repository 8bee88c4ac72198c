"""The pair under review: what ``rso-registration review`` was asked for, the images as volume nodes
(all or nothing), set as the registration's inputs, and removed again when another pair is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from rso.core.imageio import read_scalar_image, read_truth_field
from rso.errors import InputError
from RSORegistrationLib.logic import RegistrationLogic
from RSORegistrationLib.parameters import OUTPUT_NODES
from RSORegistrationLib.results import reusable
from RSORegistrationLib.transforms import read_transform_file, transform_node_from_field
from RSORegistrationLib.volumes import volume_from_image


@dataclass
class ReviewOptions:
    """What ``rso-registration review`` was asked for.

    ``session``: the engine's session folder, reopened when it holds one (its own inputs are shown),
    else the folder the first Register starts the session in (default: a new one under the cache).
    ``parameters``: RunParameters fields (modelChannels, gridShape, isoIterations, rsoMode, ...);
    ``engine``: further arguments of the worker's ``open`` (precision, similarity, smoothness).
    ``fixed_geometry`` / ``moving_geometry``: the RTK projection geometry files of a phase-binned 4D CBCT
    pair, and ``placement`` (an ITK affine: RTK frame -> LPS) (rso.core.projection), for the pair given
    here only: ISO and native RSO then compare the images artefact-matched, and RSO may return a box to
    an earlier answer.
    ``fixed_series`` / ``moving_series``: which series of a DICOM folder holding several (UID or index, as
    ``rso-registration series`` lists them). ``initial_transform`` (an ITK transform file, fixed -> moving
    points) and ``fit_mask`` (a binary image) become the registration's initialTransform and fitMask
    nodes, for the pair given here only; the rigid pre-alignment is ``parameters["prealign"]``.
    """

    fixed: str | None = None
    moving: str | None = None
    truth: str | None = None
    fixed_series: str | None = None
    moving_series: str | None = None
    initial_transform: str | None = None
    fit_mask: str | None = None
    fixed_geometry: str | None = None
    moving_geometry: str | None = None
    placement: str | None = None
    session: str | None = None
    out: str | None = None
    parameters: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)


@dataclass
class InputNodes:
    """The pair under review. ``moving_as_acquired`` shares the moving voxels but no transform:
    the moving node itself is shown through the registration's transform once there is one."""

    fixed: object
    moving: object
    moving_as_acquired: object
    truth: object = None
    paths: dict = field(default_factory=dict)
    initial_transform: object = None  # T0 as a transform node (fixed -> moving points once written)
    fit_mask: object = None  # a label map volume node

    def nodes(self) -> list:
        made = (self.fixed, self.moving, self.moving_as_acquired, self.truth, self.initial_transform)
        return [node for node in (*made, self.fit_mask) if node is not None]


class PairLoader:
    """Reads a pair into new nodes, makes it the logic's inputs, and removes a pair with its results.

    ``parameters``: RunParameters fields applied to every pair (the command line's).
    """

    def __init__(self, scene, logic: RegistrationLogic, parameters: dict):
        self.scene, self.logic, self.parameters = scene, logic, parameters

    def read(self, fixed, moving, truth, given: ReviewOptions | None = None) -> InputNodes:
        """New nodes for the images; if any file is bad, the nodes made so far are removed again.

        ``given``: the command line's DICOM series, initial transform and fit mask for this pair.
        """
        given = given or ReviewOptions()
        made = []
        try:
            fixed_node = self._volume(fixed, "fixed image", made, given.fixed_series)
            moving_node = self._volume(moving, "moving image", made, given.moving_series)
            as_acquired = self.scene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode",
                self.scene.GenerateUniqueName(f"{moving_node.GetName()} as acquired"),
            )
            made.append(as_acquired)
            as_acquired.CopyOrientation(moving_node)
            as_acquired.SetAndObserveImageData(moving_node.GetImageData())  # the same voxels, not a copy
            as_acquired.CreateDefaultDisplayNodes()
            truth_node = None
            if truth:
                field = read_truth_field(truth)
                truth_node = transform_node_from_field(self.scene, field, f"{Path(truth).name} (truth)")
                made.append(truth_node)
            initial = self._initial_transform(given.initial_transform, made)
            mask = self._fit_mask(given.fit_mask, made)
        except Exception:
            for node in made:
                self.scene.RemoveNode(node)
            raise
        paths = {"fixed": str(fixed), "moving": str(moving), "truth": str(truth or "")}
        return InputNodes(fixed_node, moving_node, as_acquired, truth_node, paths, initial, mask)

    def _volume(self, path, what: str, made: list, series: str | None = None):
        """``series``: which series of a DICOM folder; a folder of several without it is refused in one
        line that lists them (rso.core.dicom). The node keeps the file's pixel type, as the Slicer module's
        volumes do (an int16 CT: 2 bytes a voxel, not float32's 4)."""
        image = read_scalar_image(path, what, series=series)
        node = volume_from_image(self.scene, image, volume_name(path))
        made.append(node)
        return node

    def _initial_transform(self, path, made: list):
        """T0's file (checked by the engine's reader first, for its one-line errors) read by Slicer into a
        transform node: Slicer keeps a file's fixed -> moving transform as the node's from-parent transform,
        so it is written back as it was read (session_setup.write_initial_transform)."""
        if not path:
            return None
        from rso.core.initial import read_initial_transform

        read_initial_transform(path)
        node = self.scene.AddNewNodeByClass(
            "vtkMRMLTransformNode", self.scene.GenerateUniqueName(f"{volume_name(path)} (initial)")
        )
        made.append(node)
        return read_transform_file(self.scene, path, node.GetName(), node)

    def _fit_mask(self, path, made: list):
        """The fit mask's file as a label map volume node (1 inside: wherever the file is nonzero)."""
        if not path:
            return None
        from rso.core.pair import read_fit_mask

        inside = sitk.Cast(read_fit_mask(path) != 0, sitk.sitkUInt8)
        name = f"{volume_name(path)} (fit mask)"
        node = volume_from_image(self.scene, inside, name, node_class="vtkMRMLLabelMapVolumeNode")
        made.append(node)
        return node

    def use(self, inputs: InputNodes, geometry: tuple[str, str, str] = ("", "", "")) -> None:
        """Make ``inputs`` the registration's; ``geometry``: their (fixed, moving) projection geometry
        files and the placement file ("" where none)."""
        params = self.logic.parameters()
        params.fixedVolume, params.movingVolume, params.truthTransform = (
            inputs.fixed,
            inputs.moving,
            inputs.truth,
        )
        for name, value in self.parameters.items():
            if not hasattr(params, name):
                raise InputError(f"unknown registration parameter {name!r}")
            setattr(params, name, value)
        params.fixedGeometryFile, params.movingGeometryFile, params.placementFile = geometry
        params.initialTransform, params.fitMask = inputs.initial_transform, inputs.fit_mask
        params.check()
        self.logic.set_parameters(params)

    def forget(self, inputs: InputNodes | None) -> None:
        """Remove the pair, its results and its regions from the scene (the session stays on disk)."""
        params = self.logic.parameters()
        outputs = [reusable(getattr(params, name), params) for name in OUTPUT_NODES]
        regions = self.logic.watcher.watched
        self.logic.reset()
        for node in [*outputs, *regions, *(inputs.nodes() if inputs else [])]:
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)


def checked_geometry(options: ReviewOptions) -> tuple[str, str, str]:
    """The pair's (fixed, moving) geometry files and placement, each read once to fail early with a
    one-line error; "" where none. Both geometries or neither; a placement needs them."""
    from rso.core.projection.geometry import Placement
    from rso.core.projection.scan import PhaseScan, ScanPair

    paths = (options.fixed_geometry, options.moving_geometry)
    if ScanPair.of(*(PhaseScan.read(path) if path else None for path in paths)) is None and options.placement:
        raise InputError("a placement needs the projection geometries of both images")
    if options.placement:
        Placement.from_transform(options.placement)
    return paths[0] or "", paths[1] or "", options.placement or ""


def given_for_new_pair(options: ReviewOptions) -> list[str]:
    """The command line's options that only a new pair can use ("--fixed", "--fit-mask", ...): a saved
    session is reopened with its own inputs."""
    names = ("fixed", "moving", "fixed_series", "moving_series", "initial_transform", "fit_mask")
    return ["--" + name.replace("_", "-") for name in names if getattr(options, name)]


def volume_name(path) -> str:
    """The file's name without its image suffix: "case1.nii.gz" -> "case1"."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
