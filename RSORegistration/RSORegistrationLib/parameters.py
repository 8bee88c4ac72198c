"""The run's parameters on a vtkMRMLScriptedModuleNode, so that a saved scene reproduces the run.

The names and the text encoding are exactly those of Slicer's ``parameterNodeWrapper`` (numbers
as ``str(value)``, booleans as "True"/"False", nodes as a node reference plus an empty parameter
of the same name). The widget's wrapper class and this dataclass therefore read and write the
same node; a static test checks that both declare the same names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from rso.errors import InputError
from rso.options import DEFAULT_ENGINE, PREALIGNMENTS
from rso.settings import EngineSettings, ISOSettings, RSOSettings, choices_of, default_of

log = logging.getLogger(__name__)

MODULE_NAME = "RSORegistration"
NODE_FIELDS = {  # field -> the node class it holds
    "fixedVolume": "vtkMRMLScalarVolumeNode",
    "movingVolume": "vtkMRMLScalarVolumeNode",
    "truthTransform": "vtkMRMLTransformNode",
    "initialTransform": "vtkMRMLTransformNode",
    "fitMask": "vtkMRMLScalarVolumeNode",  # a label map volume node is one too
    "region": "vtkMRMLMarkupsROINode",
    "warpedVolume": "vtkMRMLScalarVolumeNode",
    "differenceVolume": "vtkMRMLScalarVolumeNode",
    "outputTransform": "vtkMRMLGridTransformNode",
    "lossTable": "vtkMRMLTableNode",
    "lossChart": "vtkMRMLPlotChartNode",
    "metricsTable": "vtkMRMLTableNode",
    "jacobianVolume": "vtkMRMLScalarVolumeNode",
    "foldingVolume": "vtkMRMLScalarVolumeNode",
    "changeVolume": "vtkMRMLScalarVolumeNode",
}


# The node's settings fields, each one field of a settings dataclass (rso.settings): it takes that field's
# default and choices, and reaches the engine under the field's name (``settings_arguments``).
SETTING_FIELDS = {
    "device": (EngineSettings, "device"),
    "seed": (EngineSettings, "seed"),
    "allowNonCt": (EngineSettings, "allow_non_ct"),
    "isoIterations": (ISOSettings, "iterations"),
    "isoGuard": (ISOSettings, "guard"),
    "rsoIterations": (RSOSettings, "iterations"),
    "rsoMode": (RSOSettings, "mode"),
    "rsoScanRule": (RSOSettings, "scan_rule"),
    "composition": (RSOSettings, "compose"),
}


def setting_default(name: str):
    """A settings field's default as its dataclass resolves it (RSO's iterations: the default mode's)."""
    return default_of(*SETTING_FIELDS[name])


def setting_choices(name: str) -> tuple[str, ...] | None:
    return choices_of(*SETTING_FIELDS[name])


def settings_arguments(params, settings: type) -> dict:
    """The node's fields that belong to ``settings``, under the engine's names."""
    return {key: getattr(params, name) for name, (owner, key) in SETTING_FIELDS.items() if owner is settings}


# Files: str here, pathlib.Path in the widget's wrapper (a ctkPathLineEdit binds only a Path), where an
# empty path reads "." (see file_path).
PATH_FIELDS = ("modelPath", "fixedGeometryFile", "movingGeometryFile", "placementFile")


def file_path(text) -> str | None:
    """A file field's value as a path, or None when it is empty ("" here, "." from the widget's Path)."""
    text = str(text or "").strip()
    return None if text in ("", ".") else text


# The nodes a registration makes (every one of them is replaced or removed with the session's results).
OUTPUT_NODES = (
    "warpedVolume",
    "differenceVolume",
    "jacobianVolume",
    "foldingVolume",
    "changeVolume",
    "outputTransform",
    "lossTable",
    "lossChart",
    "metricsTable",
)


@dataclass
class RunParameters:
    """Inputs, settings and output nodes of one registration."""

    fixedVolume: object = None
    movingVolume: object = None
    truthTransform: object = None  # optional ground truth (fixed -> moving) for TRE
    region: object = None  # the ROI being refined
    modelPath: str = ""  # empty: the bundled general model
    modelChannels: str = ""  # e.g. "4,8,16,32,64": an untrained network of that width (tests, demos)
    gridShape: str = ""  # e.g. "32,64,64": the model grid (z, y, x); empty: the model's own
    device: str = setting_default("device")
    isoIterations: int = setting_default("isoIterations")
    isoGuard: bool = setting_default("isoGuard")  # keep ISO's field only where its guard trusts it
    rsoIterations: int = setting_default("rsoIterations")
    rsoMode: str = setting_default("rsoMode")
    rsoScanRule: bool = setting_default("rsoScanRule")  # native: decline box steps the scan cannot show
    composition: str = setting_default("composition")
    seed: int = setting_default("seed")
    autoRefine: bool = True  # placing an ROI starts RSO on it
    engine: str = DEFAULT_ENGINE  # "local", or "ssh:me@gpu-host": the worker runs there (docs/remote.md)
    allowNonCt: bool = setting_default(
        "allowNonCt"
    )  # register volumes that do not look like CT in HU, on purpose
    # T0, composed before the general model (rso.core.initial): a linear or grid transform node that, with
    # the moving volume placed under it, shows it aligned with the fixed one (Slicer's "moving to fixed"
    # registration output). Its from-parent transform maps fixed points to moving points, which is what
    # Slicer writes to an ITK file and what the engine reads. The results include it.
    initialTransform: object = None
    prealign: str = ""  # "rigid": the engine finds T0 itself (rso.core.prealign); "" none
    fitMask: object = None  # a binary volume (nonzero inside): ISO and native RSO compare only inside it
    # RTK projection geometry files (ThreeDCircularProjectionGeometry XML) of a phase-binned 4D CBCT
    # pair (rso.core.projection): ISO and native RSO then compare artefact-matched images. Both or neither.
    fixedGeometryFile: str = ""
    movingGeometryFile: str = ""
    placementFile: str = ""  # optional ITK affine .tfm: RTK frame -> the images' LPS (default: re-indexing)
    sessionFolder: str = ""
    warpedVolume: object = None
    differenceVolume: object = None
    outputTransform: object = None
    lossTable: object = None
    lossChart: object = None
    metricsTable: object = None
    jacobianVolume: object = None  # det J of the field (rso.core.quality)
    foldingVolume: object = None  # 1 where det J <= 0
    changeVolume: object = None  # how far the last step moved each voxel (mm)

    def check(self) -> None:
        """Refuse settings the engine would refuse, before anything is written or started."""
        if self.fixedVolume is None or self.movingVolume is None:
            raise InputError("select a fixed and a moving volume")
        if self.fixedVolume is self.movingVolume:
            raise InputError("fixed and moving volume are the same node; select two volumes")
        for name in ("device", "rsoMode", "composition"):
            allowed = setting_choices(name)
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        for name in ("isoIterations", "rsoIterations"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0")
        self.check_projection_files()
        self.check_alignment()
        from rso.service.remote import engine_command

        engine_command(self.engine)  # InputError for anything but local or ssh:DESTINATION

    def check_alignment(self) -> None:
        """T0 comes from a transform node or from the engine's pre-alignment, never both."""
        if self.prealign and self.prealign not in PREALIGNMENTS:
            raise InputError(f"prealign must be one of {('', *PREALIGNMENTS)}, not {self.prealign!r}")
        if self.prealign and self.initialTransform is not None:
            raise InputError(
                f"give an initial transform or a {self.prealign} pre-alignment, not both: clear one of them"
            )

    def check_projection_files(self) -> None:
        """Artefact matching needs the geometry of both images; a placement alone would do nothing."""
        fixed, moving = file_path(self.fixedGeometryFile), file_path(self.movingGeometryFile)
        if bool(fixed) != bool(moving):
            given, missing = ("fixed", "moving") if fixed else ("moving", "fixed")
            raise InputError(
                f"projection geometry: only the {given} image's is given; choose the {missing} image's "
                "too (artefact matching needs both), or clear it"
            )
        if file_path(self.placementFile) and not fixed:
            raise InputError("a placement transform needs the projection geometries of both images")


def _encode(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _decode(text: str, kind: type):
    if kind is bool:
        return text == "True"
    return kind(text)


def write_parameters(node, params: RunParameters) -> None:
    """Store every field on the parameter node (one Modified event at the end)."""
    was_disabled = node.StartModify()
    try:
        for field in fields(params):
            value = getattr(params, field.name)
            if field.name in NODE_FIELDS:
                node.SetParameter(field.name, "")
                node.SetNodeReferenceID(field.name, value.GetID() if value is not None else None)
            else:
                node.SetParameter(field.name, _encode(value))
    finally:
        node.EndModify(was_disabled)


def read_parameters(node) -> RunParameters:
    """The fields stored on the node; missing ones keep their defaults."""
    params = RunParameters()
    types = {"str": str, "int": int, "bool": bool}
    for field in fields(params):
        if field.name in NODE_FIELDS:
            setattr(params, field.name, node.GetNodeReference(field.name))
        elif node.HasParameter(field.name):
            try:
                setattr(params, field.name, _decode(node.GetParameter(field.name), types[field.type]))
            except ValueError:
                log.warning(
                    "parameter %s=%r is not a %s; keeping %r",
                    field.name,
                    node.GetParameter(field.name),
                    field.type,
                    getattr(params, field.name),
                )
    return params


def parameter_node(scene, create: bool = True):
    """The module's singleton parameter node: the one ScriptedLoadableModuleLogic.getParameterNode finds."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None and create:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # owned by the Python variable until the scene takes it
        node.SetSingletonTag(MODULE_NAME)
        node.SetName(MODULE_NAME)
        node = scene.AddNode(node)
    if node is not None and node.GetAttribute("ModuleName") != MODULE_NAME:
        node.SetAttribute("ModuleName", MODULE_NAME)  # lost on scene close, as Slicer notes
    return node
