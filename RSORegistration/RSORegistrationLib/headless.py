"""Slicer's MRML without the application: a scene with the logics Slicer would set up, and
offscreen slice views. For tests, scripts and the README screenshot; the module never needs it.

Rendering needs an OpenGL context without a display: set VTK_DEFAULT_OPENGL_WINDOW to
vtkEGLRenderWindow (Mesa's llvmpipe works) before VTK creates a window. A render window without
an interactor crashes in Render(), so each view gets one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

log = logging.getLogger(__name__)


@dataclass
class HeadlessSlicer:
    """A scene plus the application, colour, volumes and markups logics that Slicer's GUI would create."""

    scene: object
    app_logic: object
    volumes_logic: object
    markups_logic: object


def new_scene() -> HeadlessSlicer:
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = app_logic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app_logic)
    volumes.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Volumes", volumes)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLApplicationLogic(app_logic)
    markups.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Markups", markups)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    return HeadlessSlicer(scene, app_logic, volumes, markups)


class _ImageLayer:
    """Puts the slice logic's blended RGBA image into the view, as CTK's light-box manager does in Slicer."""

    def __init__(self, renderer):
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255)  # the slice logic has already applied window/level: 8-bit RGBA
        self.mapper.SetColorLevel(127.5)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(self.mapper)
        self.actor.GetProperty().SetDisplayLocationToBackground()
        renderer.AddViewProp(self.actor)

    def connect(self, connection) -> None:
        self.mapper.SetInputConnection(connection)


class OffscreenSliceView:
    """One slice view (Red/Yellow/Green) rendered offscreen, with the markups displayable manager."""

    MANAGERS = ("vtkMRMLMarkupsDisplayableManager", "vtkMRMLCrosshairDisplayableManager")

    def __init__(self, app: HeadlessSlicer, name: str = "Red", size=(512, 512)):
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetMultiSamples(0)
        self.window.SetSize(*size)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()  # Render() crashes without one
        self.interactor.SetRenderWindow(self.window)
        self.layer = _ImageLayer(self.renderer)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.SetRenderer(self.renderer)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(app.app_logic)
        for manager in self.MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers.Initialize(factory, self.renderer)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app.app_logic)
        app.app_logic.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(app.scene)
        self.slice_node = self.logic.AddSliceNode(name)
        self.managers.SetMRMLDisplayableNode(self.slice_node)
        self.logic.ResizeSliceNode(*size)

    @property
    def composite(self):
        return self.logic.GetSliceCompositeNode()

    def set_orientation(self, orientation: str = "Axial") -> None:
        self.slice_node.SetOrientation(orientation)

    def fit(self) -> None:
        self.logic.FitSliceToBackground()

    def jump_to(self, ras) -> None:
        self.slice_node.JumpSliceByOffsetting(*[float(v) for v in ras])

    def render(self) -> np.ndarray:
        """The view as an (rows, columns, 3) uint8 array, top row first."""
        self.layer.connect(self.logic.GetImageDataConnection())
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
        return pixels[::-1].copy()

    def ras_to_pixel(self, ras) -> tuple[float, float]:
        """(column, row) in the rendered array of a RAS point on the current slice."""
        xy_to_ras = np.array(
            [[self.slice_node.GetXYToRAS().GetElement(i, j) for j in range(4)] for i in range(4)]
        )
        x, y, _, _ = np.linalg.solve(xy_to_ras, [*ras, 1.0])
        height = self.window.GetSize()[1]
        return float(x), float(height - 1 - y)

    def save_png(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = self.render()
        image = vtk.vtkImageData()
        image.SetDimensions(pixels.shape[1], pixels.shape[0], 1)
        image.GetPointData().SetScalars(
            numpy_support.numpy_to_vtk(pixels[::-1].reshape(-1, 3).copy(), deep=True)
        )
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputData(image)
        writer.Write()
        return path


def save_scene(scene, path: str | Path) -> Path:
    """Write every storable node's data beside ``path`` and the scene's .mrml (what Slicer's Save does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if node.GetHideFromEditors() and not node.IsA("vtkMRMLTableNode"):
            continue  # default colour tables and similar: Slicer recreates them
        storage = node.GetStorageNode()
        if storage is None:
            if not node.AddDefaultStorageNode():
                continue
            storage = node.GetStorageNode()
        if not storage.GetFileName():
            extension = storage.GetDefaultWriteFileExtension()
            storage.SetFileName(str(path.parent / f"{node.GetID()}.{extension}"))
        if not storage.WriteData(node):
            raise OSError(f"could not write {node.GetName()} to {storage.GetFileName()}")
    scene.SetRootDirectory(str(path.parent))
    scene.SetURL(str(path))
    if not scene.Commit():
        raise OSError(f"could not write the scene {path}")
    return path


def load_scene(path: str | Path) -> HeadlessSlicer:
    """A new headless scene with a saved .mrml scene (and its data files) loaded."""
    app = new_scene()
    app.scene.SetURL(str(path))
    if not app.scene.Import():
        raise OSError(f"could not read the scene {path}")
    return app
