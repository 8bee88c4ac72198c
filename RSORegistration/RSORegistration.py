"""RSO Registration: deep interactive deformable registration in 3D Slicer.

General model, then ISO on the whole image, then RSO on the boxes the clinician draws. This file is only
the Qt part (widgets, parameter node, self-test); RSORegistrationLib decides, a worker process computes.
"""

from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLGridTransformNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from rso import options  # plain tuples and defaults: no torch
from rso.settings import EngineSettings, ISOSettings, RSOSettings, choices_of, default_of  # no torch either


class RSORegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RSO Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []  # PyTorch (an extension dependency) is used only on the first Apply
        self.parent.contributors = ["RSORegistration contributors"]
        self.parent.helpText = _(
            "Deep interactive deformable registration (region-specific optimization, RSO). Register the "
            "pair with the general model, refine the whole image (ISO), then draw boxes where the result is "
            "not good enough: each box is refined (RSO) as soon as it is placed. The slice views show the "
            "fixed image with the difference to the warped moving image in colour. "
            "Documentation: docs/slicer-module.md in this extension's source folder."
        )
        self.parent.acknowledgementText = _(
            "Implements the method of Bai et al., Region Specific Optimization (RSO)-based Deep Interactive "
            "Registration. Uses MONAI, PyTorch and SimpleITK."
        )


@parameterNodeWrapper
class RSORegistrationParameterNode:
    """RunParameters' names (a test keeps them equal); defaults, choices: rso.settings (SETTING_FIELDS)."""

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    truthTransform: vtkMRMLTransformNode
    region: vtkMRMLMarkupsROINode
    modelPath: Path
    modelChannels: str = ""
    gridShape: str = ""
    device: Annotated[str, Choice(list(choices_of(EngineSettings, "device")))] = default_of(
        EngineSettings, "device"
    )
    isoIterations: Annotated[int, WithinRange(0, 100000)] = default_of(ISOSettings, "iterations")
    isoGuard: bool = default_of(ISOSettings, "guard")
    rsoIterations: Annotated[int, WithinRange(0, 100000)] = default_of(RSOSettings, "iterations")
    rsoMode: Annotated[str, Choice(list(choices_of(RSOSettings, "mode")))] = default_of(RSOSettings, "mode")
    rsoScanRule: bool = default_of(RSOSettings, "scan_rule")
    composition: Annotated[str, Choice(list(choices_of(RSOSettings, "compose")))] = default_of(
        RSOSettings, "compose"
    )
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = default_of(EngineSettings, "seed")
    autoRefine: bool = True
    engine: str = options.DEFAULT_ENGINE
    allowNonCt: bool = default_of(EngineSettings, "allow_non_ct")
    initialTransform: vtkMRMLTransformNode  # T0: the moving volume under it lines up with the fixed one
    prealign: Annotated[str, Choice(["", *options.PREALIGNMENTS])] = ""  # "rigid": a checkbox (onPrealign)
    fitMask: vtkMRMLScalarVolumeNode  # binary; a label map volume node is a scalar volume node too
    fixedGeometryFile: Path  # RTK geometry .xml of a phase-binned 4D CBCT pair (ctkPathLineEdit binds Path)
    movingGeometryFile: Path
    placementFile: Path  # optional ITK affine .tfm: RTK frame -> the volumes' LPS
    sessionFolder: str = ""
    warpedVolume: vtkMRMLScalarVolumeNode
    differenceVolume: vtkMRMLScalarVolumeNode
    outputTransform: vtkMRMLGridTransformNode
    lossTable: vtkMRMLTableNode
    lossChart: vtkMRMLPlotChartNode
    metricsTable: vtkMRMLTableNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    foldingVolume: vtkMRMLScalarVolumeNode
    changeVolume: vtkMRMLScalarVolumeNode


class RSORegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RSORegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RSORegistrationLogic()
        self.logic.listener = self
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, handler in (
            (self.ui.registerButton, self.onRegister),
            (self.ui.isoButton, self.onIso),
            (self.ui.drawRegionButton, self.onDrawRegion),
            (self.ui.undoButton, self.onUndo),
            (self.ui.refineRegionButton, self.onRefineRegion),
            (self.ui.cancelButton, self.onCancel),
            (self.ui.exportButton, self.onExport),
            (self.ui.reopenButton, self.onReopen),
            (self.ui.clearCacheButton, self.onClearCache),
            (self.ui.prealignCheckBox, self.onPrealign),
            (self.ui.propagateLabelsButton, self.onPropagateLabels),
        ):
            button.connect("clicked(bool)", handler)
        overlays = ("difference", "jacobian", "folding", "change")  # overlayComboBox's items, in order
        self.ui.overlayComboBox.connect(
            "currentIndexChanged(int)",
            lambda index: self._start(
                _("Failed to show the overlay."), lambda: self.logic.core.show_overlay(overlays[index])
            ),
        )
        self.ui.exportDirectoryButton.directory = qt.QDir.homePath()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self.logic.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        if self.logic.hasCore:
            self.logic.core.reset()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            self._parameterNode.fixedVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with the "SlicerParameterName" property in the .ui are connected here.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    # ------------------------------------------------------------------ state -> widgets
    def updateGUI(self, caller=None, event=None) -> None:
        """Widgets follow the state (RSORegistrationLib.panel decides): only Cancel while a step runs."""
        from RSORegistrationLib.charts import plot_view_node
        from RSORegistrationLib.panel import enabled_widgets, metrics_text

        params = self._parameterNode
        if params is None:
            return
        core = self.logic.core if self.logic.hasCore else None
        for name, enabled in enabled_widgets(params, core).items():
            getattr(self.ui, name).enabled = enabled
        if params.region is not None and core:
            core.watch_region(params.region)  # a region picked in the selector is refined when edited
        if core:
            self.ui.statusLabel.text = core.status
            self.ui.metricsLabel.text = metrics_text(core.history, _)
        self.ui.metricsTableView.setMRMLTableNode(params.metricsTable)
        self.ui.prealignCheckBox.checked = params.prealign == "rigid"
        if params.lossChart:
            self.ui.lossPlotWidget.setMRMLPlotViewNode(plot_view_node(slicer.mrmlScene, params.lossChart))

    def onProgress(self, message: dict) -> None:
        from RSORegistrationLib.logic import progress_text
        from RSORegistrationLib.panel import progress_percent

        self.ui.progressBar.value = int(progress_percent(message))
        self.ui.progressBar.format = progress_text(message)

    def onStepDone(self, cmd: str, result: dict) -> None:
        self.ui.progressBar.value = 100 if cmd != "open" else 0
        self.ui.progressBar.format = "%p%"
        self.updateGUI()

    def onEngineError(self, kind: str, message: str) -> None:
        slicer.util.errorDisplay(_("The registration step failed:") + f"\n{message}")
        self.updateGUI()

    def onRegionMoved(self, roi) -> None:  # a refined region was moved: offered again, not rerun unasked
        self._parameterNode.region = roi
        self.ui.statusLabel.text = _(
            "Region {name} moved: press 'Refine region (RSO)' to refine it again."
        ).format(name=roi.GetName())
        self.updateGUI()

    # -------------------------------------------------------------------------- buttons
    def onRegister(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the registration."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.logic.core.open_session()
            self.logic.core.general()
            self.logic.startPolling()

    def onIso(self) -> None:
        self._start(_("Failed to start ISO."), lambda: self.logic.core.iso())

    def onDrawRegion(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start drawing a region.")):
            roi = self.logic.core.new_region(_("RSO region"))  # placing the box starts RSO (see RoiWatcher)
            markupsLogic = slicer.modules.markups.logic()
            markupsLogic.SetActiveList(roi)
            markupsLogic.StartPlaceMode(False)

    def onRefineRegion(self) -> None:
        self._start(_("Failed to start RSO."), lambda: self.logic.core.rso(self._parameterNode.region))

    def onUndo(self) -> None:
        self._start(_("Failed to undo."), lambda: self.logic.core.undo())

    def onPrealign(self, checked: bool) -> None:  # a str parameter ("" or "rigid"): no checkbox binds one
        self._parameterNode.prealign = "rigid" if checked else ""

    def onCancel(self) -> None:
        self.logic.core.cancel()
        self.updateGUI()

    def onPropagateLabels(self) -> None:
        self._start(
            _("Failed to carry the contours."),
            lambda: self.logic.core.propagate_labels(self.ui.labelsSelector.currentNode()),
        )

    def onExport(self) -> None:
        self._start(
            _("Failed to export."), lambda: self.logic.core.export(self.ui.exportDirectoryButton.directory)
        )

    def _start(self, failure: str, request) -> None:
        with slicer.util.tryWithErrorDisplay(failure):
            request()
            self.logic.startPolling()

    def onReopen(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to reopen the session.")):
            if self.logic.ensureDependencies():
                self.logic.core.reopen()
                self.logic.startPolling()

    def onClearCache(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to clear the cache.")):
            removed = self.logic.core.clear_cache()
            self.ui.statusLabel.text = _("Removed {count} stored session(s).").format(count=removed)


class RSORegistrationLogic(ScriptedLoadableModuleLogic):
    """The console's entry point (``slicer.util.getModuleLogic("RSORegistration").run(...)``):
    RSORegistrationLib's RegistrationLogic (``self.core``) plus the dependency installer, the polling
    timer and the cache path."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._core = None
        self.listener = None  # the widget, when there is one
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self._poll)

    def getParameterNode(self):
        return RSORegistrationParameterNode(super().getParameterNode())

    @property
    def hasCore(self) -> bool:
        return self._core is not None

    @property
    def core(self):
        """The Qt-free logic, made on first use (it imports SimpleITK and the engine's geometry)."""
        if self._core is None:
            from RSORegistrationLib.logic import RegistrationLogic

            self._core = RegistrationLogic(
                slicer.mrmlScene, cache_dir=Path(slicer.app.cachePath) / "RSORegistration"
            )
            if self.listener is not None:
                self._core.listen(self.listener)
        return self._core

    def startPolling(self) -> None:
        if not self.timer.isActive():
            self.timer.start()
        if self.listener is not None:
            self.listener.updateGUI()

    def _poll(self) -> None:
        if self._core is None or not self._core.process():
            self.timer.stop()

    def shutdown(self) -> None:
        self.timer.stop()
        if self._core is not None:
            self._core.close()
            self._core = None

    def ensureDependencies(self, confirm: bool = True) -> bool:
        """torch (through the PyTorch extension) and the engine's packages, installed once the user agrees."""
        from RSORegistrationLib.dependencies import ensure_dependencies, pytorch_utils_logic

        ask = slicer.util.confirmOkCancelDisplay if confirm else None
        return ensure_dependencies(pytorch_utils_logic(_), ask, slicer.util.pip_install, _)

    def run(self, fixed, moving, regions=(), blocking: bool = True, **settings) -> list:
        """general -> ISO -> RSO on each region (ROI nodes or [R1, A1, S1, R2, A2, S2] in RAS mm); settings as
        RegistrationLogic.run takes them. Returns the records when blocking; else the timer drives it."""
        if not self.ensureDependencies():
            raise RuntimeError(_("The required Python packages are not installed."))
        if blocking:
            settings.setdefault("idle", slicer.app.processEvents)  # keeps Slicer responsive meanwhile
        history = self.core.run(fixed, moving, regions, blocking=blocking, **settings)
        if not blocking:
            self.startPolling()
        return history


class RSORegistrationTest(ScriptedLoadableModuleTest):
    """general -> ISO -> RSO on an ROI node, on a small synthetic pair, through the worker process."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_general_iso_rso_on_a_region()

    def test_general_iso_rso_on_a_region(self):
        self.delayDisplay("Starting the test")
        import numpy as np

        from RSORegistrationLib.phantom import add_phantom_volumes
        from RSORegistrationLib.roi import roi_from_ras_box
        from RSORegistrationLib.volumes import array_from_volume

        fixed, moving, pair = add_phantom_volumes(slicer.mrmlScene)
        movingVoxels = array_from_volume(moving)
        roi = roi_from_ras_box(slicer.mrmlScene, pair.region_ras(), "test region")
        logic = RSORegistrationLogic()
        self.assertTrue(logic.ensureDependencies(confirm=False))
        history = logic.run(
            fixed,
            moving,
            [roi],
            iso_iterations=3,
            rso_iterations=3,
            modelChannels="4,8,16,32,64",
            gridShape="16,32,32",
            device="cpu",
            timeout=900,
        )
        self.assertEqual([record["kind"] for record in history], ["general", "iso", "rso"])
        self.assertEqual(len(history[1]["loss"]), 3)
        self.assertIsNotNone(history[2]["metrics"]["rmse_hu_box"])
        params = logic.core.parameters()
        for node in (params.warpedVolume, params.differenceVolume, params.outputTransform):
            self.assertIsNotNone(node)
            self.assertNotIn(node.GetID(), (fixed.GetID(), moving.GetID()))
        self.assertIs(moving.GetParentTransformNode(), params.outputTransform)
        np.testing.assert_array_equal(array_from_volume(moving), movingVoxels)  # the input is untouched
        self.assertEqual(params.metricsTable.GetTable().GetNumberOfRows(), 3)
        self.assertEqual(params.lossChart.GetNumberOfPlotSeriesNodes(), 2)
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(composite.GetForegroundVolumeID(), params.differenceVolume.GetID())
        logic.core.undo()
        self.assertEqual([record["kind"] for record in logic.core.wait(timeout=300)], ["general", "iso"])
        self.assertEqual(params.lossChart.GetNumberOfPlotSeriesNodes(), 1)
        logic.shutdown()
        self.delayDisplay("Test passed")
