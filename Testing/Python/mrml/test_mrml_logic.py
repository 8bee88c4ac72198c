"""The module logic on a real MRML scene, with the engine in-process (the worker's protocol).

One registration (general -> ISO -> RSO on an ROI) runs once per module; the tests read what it
left in the scene. Failure paths use a scripted backend. A test against the real worker process
runs where the engine's client exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest_slicer import SMALL_GRID, TINY_CHANNELS, demo, roi_node  # noqa: F401  (fixtures)

from rso.errors import InputError
from RSORegistrationLib.backends import InProcessBackend
from RSORegistrationLib.charts import step_labels
from RSORegistrationLib.headless import load_scene, new_scene, save_scene
from RSORegistrationLib.logic import RegistrationError, RegistrationLogic
from RSORegistrationLib.parameters import parameter_node, read_parameters
from RSORegistrationLib.transforms import field_from_transform_node
from RSORegistrationLib.volumes import array_from_volume, ijk_to_ras

SETTINGS = dict(modelChannels=TINY_CHANNELS, gridShape=SMALL_GRID, device="cpu", seed=3)


def column(table_node, name: str) -> np.ndarray:
    array = table_node.GetTable().GetColumnByName(name)
    assert array is not None, f"no column {name!r}"
    return np.array([array.GetValue(i) for i in range(array.GetNumberOfTuples())])


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A scene after general -> ISO-2 -> RSO-2 on an ROI, and what the inputs looked like before."""
    from RSORegistrationLib.phantom import add_phantom_volumes

    app = new_scene()
    app.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # what a slice view would hold
    fixed, moving, pair = add_phantom_volumes(app.scene)
    before = {node.GetID(): (array_from_volume(node), ijk_to_ras(node)) for node in (fixed, moving)}
    roi = roi_node(app.scene, pair.region_ras())
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path_factory.mktemp("cache"))
    steps = []
    history = logic.run(
        fixed,
        moving,
        [roi],
        iso_iterations=2,
        rso_iterations=2,
        on_step=lambda cmd, result: steps.append(cmd),
        **SETTINGS,
    )
    yield app, logic, fixed, moving, roi, before, history, steps
    logic.close()


def test_three_steps_run_in_order_and_report(registered):
    app, logic, fixed, moving, roi, before, history, steps = registered
    assert steps == ["open", "general", "iso", "rso"]
    assert [record["kind"] for record in history] == ["general", "iso", "rso"]
    assert [len(record["loss"]) for record in history] == [0, 2, 2]
    assert history[2]["box_ras"] is not None and history[2]["metrics"]["rmse_hu_box"] is not None
    from RSORegistrationLib.roi import roi_ras_box

    assert logic.regions_done == {roi.GetID(): roi_ras_box(roi)}  # the ROI is marked as refined
    np.testing.assert_allclose(history[2]["box_ras"], roi_ras_box(roi), atol=1e-3)
    assert not logic.busy and logic.session_open
    assert "RSO done" in logic.status


def test_results_are_new_nodes_and_inputs_are_untouched(registered):
    app, logic, fixed, moving, roi, before, history, steps = registered
    params = logic.parameters()
    outputs = [params.warpedVolume, params.differenceVolume, params.outputTransform]
    assert all(node is not None for node in outputs)
    assert {node.GetID() for node in outputs}.isdisjoint({fixed.GetID(), moving.GetID()})
    for node in (fixed, moving):
        voxels, matrix = before[node.GetID()]
        np.testing.assert_array_equal(array_from_volume(node), voxels)
        np.testing.assert_array_equal(ijk_to_ras(node), matrix)
    # The moving volume is shown through the result, so the views re-warp when it changes.
    assert moving.GetParentTransformNode() is params.outputTransform
    assert fixed.GetParentTransformNode() is None
    field = field_from_transform_node(params.outputTransform)
    assert field.GetSize() == tuple(fixed.GetImageData().GetDimensions())
    # Warped and difference volumes live on the fixed grid, difference = warped - fixed.
    np.testing.assert_allclose(ijk_to_ras(params.warpedVolume), ijk_to_ras(fixed), atol=1e-6)
    np.testing.assert_allclose(  # each rounded to whole HU on its own (int16 CT): within one HU
        array_from_volume(params.differenceVolume),
        array_from_volume(params.warpedVolume) - array_from_volume(fixed),
        atol=1.0,
    )


def test_slice_views_show_fixed_with_the_difference_overlay(registered):
    app, logic, fixed, moving, roi, before, history, steps = registered
    params = logic.parameters()
    composite = app.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetBackgroundVolumeID() == fixed.GetID()
    assert composite.GetForegroundVolumeID() == params.differenceVolume.GetID()
    assert composite.GetCompositing() == composite.Add
    display = params.differenceVolume.GetDisplayNode()
    assert display.GetColorNode().GetName() == "RSO difference"
    assert display.GetLevel() == 0.0 and not display.GetAutoWindowLevel()
    table = display.GetColorNode()
    middle = [0.0] * 4
    table.GetColor(table.GetNumberOfColors() // 2, middle)
    assert middle[:3] == [0.0, 0.0, 0.0]  # zero difference adds nothing to the fixed image


def test_quality_maps_are_styled_volumes_that_can_be_the_foreground(registered):
    app, logic, fixed, moving, roi, before, history, steps = registered
    params = logic.parameters()
    composite = app.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    tables = {"jacobian": "RSO det J", "folding": "RSO folding", "change": "RSO change"}
    for name, table in tables.items():
        volume = getattr(params, f"{name}Volume")
        assert volume is not None and volume.GetDisplayNode().GetColorNode().GetName() == table
        np.testing.assert_allclose(ijk_to_ras(volume), ijk_to_ras(fixed), atol=1e-6)
        logic.show_overlay(name)
        assert (
            composite.GetForegroundVolumeID() == volume.GetID()
            and composite.GetBackgroundVolumeID() == fixed.GetID()
        )
    display = params.jacobianVolume.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (2.0, 1.0)  # centred on det J = 1
    neutral = [0.0] * 4
    display.GetColorNode().GetColor(display.GetColorNode().GetNumberOfColors() // 2, neutral)
    assert neutral[:3] == [0.0, 0.0, 0.0]  # volume kept adds nothing to the fixed image
    with pytest.raises(InputError, match="overlay must be one of"):
        logic.show_overlay("sharpness")
    logic.show_overlay("difference")
    assert composite.GetForegroundVolumeID() == params.differenceVolume.GetID()


def test_contours_are_carried_onto_the_fixed_volume_as_a_new_segmentation(registered):
    import slicer

    from rso.core.labels import Label
    from rso.simulation.phantom import LABELS, phantom_pair
    from RSORegistrationLib.segmentations import color_node_from_table, label_image_from_node
    from RSORegistrationLib.volumes import volume_from_image

    app, logic, fixed, moving, roi, before, history, steps = registered
    labelmap = volume_from_image(
        app.scene, phantom_pair().moving_labels, "drawn", node_class="vtkMRMLLabelMapVolumeNode"
    )
    table = {value: Label(value, name, color) for value, (name, color) in LABELS.items()}
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(
        color_node_from_table(app.scene, table, "drawn colours").GetID()
    )
    contours = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "contours")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, contours)
    with pytest.raises(InputError, match="segmentation or a label-map volume"):
        logic.propagate_labels(moving)
    assert not logic.busy

    logic.propagate_labels(contours)
    logic.wait(timeout=120)
    carried = logic.carried_labels
    names = lambda node: [
        node.GetSegmentation().GetNthSegment(i).GetName()  # noqa: E731
        for i in range(node.GetSegmentation().GetNumberOfSegments())
    ]
    assert carried is not contours and names(carried) == names(contours) == [n for n, _ in LABELS.values()]
    written = sitk.ReadImage(str(Path(logic.parameters().sessionFolder) / "current" / "labels_warped.nii.gz"))
    on_fixed, _ = label_image_from_node(carried, fixed)  # the segmentation, rasterised on the fixed grid
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(on_fixed), sitk.GetArrayViewFromImage(written))
    assert [row["name"] for row in logic.labels_report["labels"]] == [n for n, _ in LABELS.values()]
    assert logic.labels_report["outside_field_of_view"] == [] and "4 label(s) carried" in logic.status
    segmentations = app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    logic.propagate_labels(contours)  # carried again (after later steps): the same output is refilled
    logic.wait(timeout=120)
    assert (
        logic.carried_labels is carried
        and app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segmentations
    )


def test_loss_table_and_chart_hold_each_curve(registered):
    app, logic, fixed, moving, roi, before, history, steps = registered
    params = logic.parameters()
    np.testing.assert_allclose(column(params.lossTable, "ISO"), history[1]["loss"])
    np.testing.assert_allclose(column(params.lossTable, "RSO 1"), history[2]["loss"])
    np.testing.assert_array_equal(column(params.lossTable, "iteration"), [1, 2])
    chart = params.lossChart
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetName() for s in series] == ["ISO", "RSO 1"]
    assert all(
        s.GetTableNodeID() == params.lossTable.GetID() and s.GetXColumnName() == "iteration" for s in series
    )
    assert [s.GetYColumnName() for s in series] == ["ISO", "RSO 1"]


def test_metrics_table_has_a_row_per_step(registered):
    app, logic, fixed, moving, roi, before, history, steps = registered
    table = logic.parameters().metricsTable
    assert table.GetTable().GetNumberOfRows() == 3
    steps_column = table.GetTable().GetColumnByName("step")
    assert [steps_column.GetValue(i) for i in range(3)] == ["general", "ISO", "RSO 1"]
    np.testing.assert_allclose(column(table, "RMSE (HU)"), [r["metrics"]["rmse_hu"] for r in history])
    assert np.isnan(column(table, "RMSE in box (HU)")[0]) and np.isfinite(
        column(table, "RMSE in box (HU)")[2]
    )


def test_saved_scene_keeps_the_parameter_node(registered, tmp_path):
    app, logic, fixed, moving, roi, before, history, steps = registered
    path = save_scene(app.scene, tmp_path / "scene" / "registration.mrml")
    reloaded = load_scene(path)
    node = parameter_node(reloaded.scene, create=False)
    assert node is not None and node.GetAttribute("ModuleName") == "RSORegistration"
    params, original = read_parameters(node), logic.parameters()
    for name in (
        "isoIterations",
        "rsoIterations",
        "rsoMode",
        "composition",
        "device",
        "seed",
        "modelChannels",
        "gridShape",
        "sessionFolder",
        "autoRefine",
    ):
        assert getattr(params, name) == getattr(original, name), name
    assert (params.isoIterations, params.device, params.seed) == (2, "cpu", 3)
    for name in (
        "fixedVolume",
        "movingVolume",
        "warpedVolume",
        "differenceVolume",
        "outputTransform",
        "lossTable",
        "lossChart",
        "metricsTable",
    ):
        assert (
            getattr(params, name) is not None
            and getattr(params, name).GetName() == getattr(original, name).GetName()
        )
    np.testing.assert_array_equal(array_from_volume(params.fixedVolume), before[fixed.GetID()][0])
    np.testing.assert_allclose(column(params.lossTable, "ISO"), history[1]["loss"], rtol=1e-5)  # TSV text


def test_roi_events_trigger_rso_and_a_moved_roi_is_offered_again(tmp_path, demo):
    app = new_scene()
    from RSORegistrationLib.volumes import volume_from_image

    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, demo.moving, "m"),
    )
    interaction = app.scene.AddNewNodeByClass("vtkMRMLInteractionNode")
    interaction.SetSingletonTag("Singleton")  # Slicer's vtkMRMLInteractionNodeSingleton
    assert interaction.GetID() == "vtkMRMLInteractionNodeSingleton"
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path)
    logic.run(fixed, moving, iso_iterations=0, rsoIterations=1, **SETTINGS)
    moved = []
    logic.on_region_moved = moved.append

    roi = app.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "drawn")
    logic.watch_region(roi)
    interaction.SetCurrentInteractionMode(interaction.Place)  # the user is between the two clicks
    roi.SetCenter(demo.region_ras()[:3])
    roi.SetSize(20.0, 20.0, 20.0)
    assert not logic.busy  # nothing starts while the box is still being drawn
    interaction.SetCurrentInteractionMode(interaction.ViewTransform)  # placement finished
    assert logic.busy
    history = logic.wait(timeout=120)
    assert [r["kind"] for r in history] == ["general", "rso"]
    np.testing.assert_allclose(history[-1]["box_ras"], logic.regions_done[roi.GetID()], atol=1e-3)

    roi.InvokeEvent(roi.PointStartInteractionEvent)  # a drag: no reaction until the user lets go
    roi.SetCenter(np.add(demo.region_ras()[:3], [0.0, 0.0, 6.0]).tolist())
    assert moved == [] and not logic.busy
    roi.InvokeEvent(roi.PointEndInteractionEvent)
    assert moved == [roi] and not logic.busy  # a refined region that moved is offered, not rerun
    roi.SetName("renamed")  # not a geometry change
    assert moved == [roi]


def test_a_region_outside_the_image_fails_before_anything_runs(registered):
    app, logic, *_ = registered
    with pytest.raises(InputError, match="outside the image"):
        logic.rso([900.0, 900.0, 900.0, 950.0, 950.0, 950.0])
    assert not logic.busy


def test_cancel_mid_step_then_undo(tmp_path, demo):
    app = new_scene()
    from RSORegistrationLib.volumes import volume_from_image

    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, demo.moving, "m"),
    )
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path)
    # ISO's guard off: its field is kept, so that undoing it shows
    steps = logic.run(fixed, moving, iso_iterations=2, isoGuard=False, **SETTINGS)
    assert [r["kind"] for r in steps] == ["general", "iso"]
    warped_before = array_from_volume(logic.parameters().warpedVolume)

    logic.rso(demo.region_ras(), iterations=500)  # far too long: cancelled after its first iteration
    logic.process()  # sent
    assert logic.busy and logic.last_progress is None
    while logic.last_progress is None:
        logic.process()
    logic.cancel()
    assert [r["kind"] for r in logic.wait(timeout=120)] == ["general", "iso"]
    assert "cancelled" in logic.status and logic.last_error is None
    np.testing.assert_array_equal(array_from_volume(logic.parameters().warpedVolume), warped_before)

    logic.undo()
    history = logic.wait()
    assert [r["kind"] for r in history] == ["general"]
    params = logic.parameters()
    assert params.lossTable.GetTable().GetNumberOfColumns() == 1  # the ISO curve left the table
    assert params.lossChart.GetNumberOfPlotSeriesNodes() == 0
    assert params.metricsTable.GetTable().GetNumberOfRows() == 1
    assert not np.array_equal(array_from_volume(params.warpedVolume), warped_before)
    logic.close()


class ScriptedBackend:
    """Answers each request with scripted messages, as a worker would."""

    def __init__(self, answers):
        self.answers, self.sent, self.cancelled, self.restarted = answers, [], 0, 0

    def request(self, cmd, **args):
        self.sent.append((cmd, args))
        return len(self.sent)

    def poll(self):
        if not self.sent:
            return []
        request_id = len(self.sent)
        answer = self.answers.get(self.sent[-1][0])
        self.answers.pop(self.sent[-1][0], None)
        return [dict(message, id=request_id) for message in (answer or [])]

    def cancel(self):
        self.cancelled += 1

    def stderr_tail(self):
        return "Traceback ...\nRuntimeError: CUDA out of memory"

    def restart(self):
        self.restarted += 1

    def close(self):
        pass


def open_scripted(tmp_path, demo, answers):
    from RSORegistrationLib.volumes import volume_from_image

    app = new_scene()
    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, demo.moving, "m"),
    )
    backend = ScriptedBackend({"open": [{"event": "done", "result": {"history": []}}], **answers})
    logic = RegistrationLogic(app.scene, lambda: backend, cache_dir=tmp_path)
    params = logic.parameters()
    params.fixedVolume, params.movingVolume = fixed, moving
    logic.set_parameters(params)
    return logic, backend


def test_engine_errors_stop_the_queue_and_raise(tmp_path, demo):
    logic, backend = open_scripted(
        tmp_path, demo, {"iso": [{"event": "error", "kind": "input", "message": "bad box"}]}
    )
    errors = []
    logic.on_error = lambda kind, message: errors.append((kind, message))
    logic.open_session()
    logic.iso(5)
    logic.rso([0, 0, 0, 10, 10, 10])
    with pytest.raises(RegistrationError, match="iso failed: bad box"):
        logic.wait(timeout=10)
    assert errors == [("input", "bad box")]
    assert [cmd for cmd, _ in backend.sent] == ["open", "iso"]  # the RSO planned on it never ran
    assert not logic.busy
    inputs = sorted(p.name for p in (tmp_path / "sessions").glob("*/inputs/*"))
    assert inputs == ["fixed.nrrd", "moving.nrrd"]  # the worker reads what the logic wrote


def test_cancel_leaves_state_and_reports_it(tmp_path, demo):
    logic, backend = open_scripted(
        tmp_path,
        demo,
        {
            "rso": [
                {
                    "event": "progress",
                    "step": "rso",
                    "iteration": 1,
                    "iterations": 9,
                    "loss": 0.5,
                    "elapsed": 1.0,
                    "eta": 8.0,
                }
            ]
        },
    )
    logic.open_session()
    logic.rso([0, -40, 0, 10, -30, 10])
    logic.iso(3)
    while logic.last_progress is None:
        logic.process()
    assert "RSO 1/9" in logic.status and "8 s left" in logic.status
    logic.cancel()
    assert backend.cancelled == 1 and len(logic.engine.queue) == 0
    backend.answers["rso"] = [{"event": "error", "kind": "cancelled", "message": "step cancelled"}]
    logic.wait(timeout=10)  # a cancel is not an error
    assert "unchanged" in logic.status and logic.history == []


def test_a_dead_worker_is_reported_with_its_stderr_and_reopens(tmp_path, demo):
    logic, backend = open_scripted(tmp_path, demo, {"general": [{"event": "died", "returncode": -9}]})
    errors = []
    logic.on_error = lambda kind, message: errors.append((kind, message))
    logic.open_session()
    logic.general()
    with pytest.raises(RegistrationError, match="CUDA out of memory"):
        logic.wait(timeout=10)
    assert errors and errors[0][0] == "died" and not logic.session_open
    folder = tmp_path / "saved"
    (folder).mkdir()
    (folder / "session.json").write_text("{}")
    params = logic.parameters()
    params.sessionFolder = str(folder)
    logic.set_parameters(params)
    backend.answers["open"] = [
        {"event": "done", "result": {"history": [{"kind": "general", "loss": [], "metrics": {}}]}}
    ]
    logic.reopen()
    logic.wait(timeout=10)
    assert backend.restarted == 1 and backend.sent[-1] == ("open", {"folder": str(folder), "device": "auto"})
    assert logic.session_open and [r["kind"] for r in logic.history] == ["general"]


def test_steps_need_a_session_and_valid_settings(tmp_path, demo):
    logic, backend = open_scripted(tmp_path, demo, {})
    with pytest.raises(InputError, match="no registration session"):
        logic.iso(3)
    with pytest.raises(InputError, match="rsoMode"):
        logic.open_session(rsoMode="fast")
    with pytest.raises(InputError, match="same node"):
        logic.open_session(movingVolume=logic.parameters().fixedVolume)
    user_transform = logic.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "user rigid")
    logic.parameters().fixedVolume.SetAndObserveTransformNodeID(user_transform.GetID())
    with pytest.raises(InputError, match="harden it first"):
        logic.open_session()
    assert backend.sent == [] and not logic.busy  # nothing was started
    assert step_labels([{"kind": "general"}, {"kind": "iso"}, {"kind": "rso"}, {"kind": "rso"}]) == [
        "general",
        "ISO",
        "RSO 1",
        "RSO 2",
    ]


def test_projection_geometry_files_reach_open_both_or_neither(tmp_path, demo):
    """The geometry and placement files go into open; one geometry alone is refused, nothing sent."""
    matching = "artefact matching on: cone beam, 96 and 102 views"
    logic, backend = open_scripted(
        tmp_path,
        demo,
        {"open": [{"event": "done", "result": {"history": [], "artefact_matching": matching}}]},
    )
    files = {name: tmp_path / f"{name}.xml" for name in ("fixed", "moving")} | {
        "placement": tmp_path / "p.tfm"
    }
    with pytest.raises(InputError, match="only the fixed image's is given; choose the moving"):
        logic.open_session(fixedGeometryFile=str(files["fixed"]), movingGeometryFile=".")  # "." : empty Path
    with pytest.raises(InputError, match="placement transform needs the projection geometries"):
        logic.open_session(placementFile=str(files["placement"]))
    assert backend.sent == []
    logic.open_session(
        fixedGeometryFile=str(files["fixed"]),
        movingGeometryFile=str(files["moving"]),
        placementFile=str(files["placement"]),
    )
    logic.wait(timeout=10)
    cmd, args = backend.sent[0]
    assert cmd == "open" and (args["fixed_geometry"], args["moving_geometry"], args["placement"]) == tuple(
        str(files[name]) for name in ("fixed", "moving", "placement")
    )
    assert logic.status == f"session open; {matching}"
    assert read_parameters(logic.parameter_node).placementFile == str(files["placement"])  # kept in the scene


def test_with_the_real_worker_process(tmp_path, demo):
    """The same flow through the engine's worker process."""
    from RSORegistrationLib.backends import worker_backend
    from RSORegistrationLib.volumes import volume_from_image

    app = new_scene()
    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, demo.moving, "m"),
    )
    logic = RegistrationLogic(app.scene, worker_backend, cache_dir=tmp_path)
    statuses = {}
    try:
        history = logic.run(
            fixed,
            moving,
            [demo.region_ras()],
            iso_iterations=1,
            rso_iterations=1,
            timeout=120,
            on_step=lambda cmd, result: statuses.setdefault(cmd, logic.status),
            **SETTINGS,
        )
    finally:
        logic.close()
    assert [r["kind"] for r in history] == ["general", "iso", "rso"]
    # No projection geometry: the status line after open says that the steps compare the images as given.
    assert statuses["open"] == "session open; artefact matching off: no projection geometry"
    assert moving.GetParentTransformNode() is logic.parameters().outputTransform


# ------------------------------------------------------------------ what the review app added to the logic
def phantom_logic(tmp_path, demo, **settings):
    from RSORegistrationLib.volumes import volume_from_image

    app = new_scene()
    fixed, moving = (
        volume_from_image(app.scene, demo.fixed, "f"),
        volume_from_image(app.scene, demo.moving, "m"),
    )
    logic = RegistrationLogic(app.scene, InProcessBackend, cache_dir=tmp_path / "cache")
    params = logic.parameters()
    params.fixedVolume, params.movingVolume = fixed, moving
    for name, value in {**SETTINGS, **settings}.items():
        setattr(params, name, value)
    logic.set_parameters(params)
    return app, logic


def test_a_session_goes_into_the_folder_named_and_reopens_from_it(tmp_path, demo):
    from rso.core.store import holds_session

    folder = tmp_path / "review" / "session"
    app, logic = phantom_logic(tmp_path, demo)
    assert logic.open_session(folder=folder, engine={"precision": "fp32"}) == folder
    logic.general()
    logic.wait(timeout=120)
    logic.close()
    assert holds_session(folder)
    with pytest.raises(InputError, match="already holds a session"):
        logic.open_session(folder=folder)  # never over a session: it would be lost
    app, again = phantom_logic(tmp_path, demo)
    again.reopen(folder)
    assert [record["kind"] for record in again.wait(timeout=120)] == ["general"]
    assert again.parameters().sessionFolder == str(folder) and again.parameters().differenceVolume is not None
    again.close()


def test_undoing_a_region_step_makes_the_region_new_again(tmp_path, demo):
    app, logic = phantom_logic(tmp_path, demo, rsoIterations=1)
    roi = roi_node(app.scene, demo.region_ras())
    logic.open_session()
    logic.general()
    logic.rso(roi)
    logic.wait(timeout=120)
    assert roi.GetID() in logic.regions_done
    refined_colour = roi.GetDisplayNode().GetColor()
    logic.undo()
    assert [record["kind"] for record in logic.wait(timeout=120)] == ["general"]
    assert logic.regions_done == {}  # moving it now refines it, as for a new box
    assert roi.GetDisplayNode().GetColor() != refined_colour
    logic.close()


def test_a_box_moved_while_it_is_refined_is_offered_again_when_the_step_ends(tmp_path, demo):
    app, logic = phantom_logic(tmp_path, demo, rsoIterations=2)
    moved = []
    logic.on_region_moved = moved.append
    roi = roi_node(app.scene, demo.region_ras())
    logic.open_session()
    logic.general()
    logic.wait(timeout=120)
    logic.watch_region(roi)
    logic.rso(roi)
    logic.process()  # sent: the engine refines the box where it was
    box = np.array(demo.region_ras())
    roi.SetCenter(((box[:3] + box[3:]) / 2 + [0.0, 0.0, 6.0]).tolist())
    assert moved == []  # a change of the box being refined waits for its step
    logic.wait(timeout=120)
    assert moved == [roi]
    logic.close()


def test_a_hand_drawn_box_outside_the_image_is_reported_not_raised(tmp_path, demo):
    app, logic = phantom_logic(tmp_path, demo)
    errors = []
    logic.on_error = lambda kind, message: errors.append((kind, message))
    logic.open_session()
    logic.general()
    logic.wait(timeout=120)
    roi = roi_node(app.scene, [900.0, 900.0, 900.0, 950.0, 950.0, 950.0])
    logic.watch_region(roi)
    roi.Modified()  # what a finished edit in a view sends; the observer must not raise into VTK
    assert errors and errors[0][0] == "input" and "outside the image" in errors[0][1]
    assert not logic.busy and "rso not started" in logic.status
    logic.close()


def test_window_level_presets():
    from conftest_slicer import oblique_image

    from RSORegistrationLib.display import WINDOW_LEVEL_PRESETS, apply_window_level
    from RSORegistrationLib.volumes import volume_from_image

    app = new_scene()
    volume = volume_from_image(app.scene, oblique_image(), "ct")
    apply_window_level(volume, "lung")
    display = volume.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == WINDOW_LEVEL_PRESETS["lung"]
    assert not display.GetAutoWindowLevel()
    apply_window_level(volume, "auto")
    assert display.GetAutoWindowLevel()
    with pytest.raises(InputError, match="preset"):
        apply_window_level(volume, "bone")


def test_the_status_line_says_when_a_box_returned_to_an_earlier_state():
    """A step that returned the box to an earlier answer says so; a declined one says nothing changed."""
    from RSORegistrationLib.logic import step_summary

    metrics = {"rmse_hu": 80.0, "tre_mm": {"mean": 2.0}}
    returned = step_summary("rso", {"metrics": metrics, "guard": {"returned_to": 1}}, [])
    assert returned.startswith("RSO done (the box returned to the field after step 1)")
    assert "no registration" in step_summary("rso", {"metrics": metrics, "guard": {"returned_to": 0}}, [])
    assert "returned" not in step_summary("rso", {"metrics": metrics, "guard": {"returned_to": None}}, [])
    assert step_summary("rso", {"declined": "the images agree"}, []).startswith(
        "RSO declined, nothing changed"
    )
    kept = step_summary("iso", {"metrics": metrics, "params": {"kept": "start", "given_gain": -0.021}}, [])
    assert kept.startswith("ISO done (its field was not kept") and "-2.1%" in kept
    across = step_summary("iso", {"metrics": metrics, "params": {"kept": "start", "axis_share": 0.42}}, [])
    assert across.startswith("ISO done (its field was not kept") and "42% of the change" in across
    tv = step_summary("iso", {"metrics": metrics, "params": {"kept": "start", "why": "TV phases"}}, [])
    assert tv.startswith("ISO done (its field was not kept: TV phases)")
    unguarded = step_summary(
        "iso",
        {"metrics": metrics, "params": {"unguarded": "no projection geometry; the images are not CT"}},
        [],
    )
    assert (
        unguarded.startswith("ISO done (unguarded: no projection geometry")
        and "ISO iterations to 0" in unguarded
    )


def test_run_keywords_split_into_the_plan_and_the_parameters():
    """``run``'s keywords: the plan's own fields, the rest RunParameters changes (iterations as ints)."""
    from RSORegistrationLib.run_plan import RunPlan

    def idle():
        pass

    plan = RunPlan.from_keywords(
        "f", "m", ([0, 0, 0, 1, 1, 1],), iso_iterations="3", timeout=5, idle=idle, device="cpu", seed=7
    )
    assert plan.regions == [[0, 0, 0, 1, 1, 1]] and plan.timeout == 5 and plan.idle is idle
    assert plan.general and plan.blocking and plan.rso_iterations is None
    assert plan.changes() == {
        "device": "cpu",
        "seed": 7,
        "fixedVolume": "f",
        "movingVolume": "m",
        "isoIterations": 3,
    }


def test_a_native_step_is_pasted_into_the_shown_nodes_and_a_deleted_node_brings_the_whole_images(
    tmp_path, demo
):
    """The nodes after a native step's window is pasted hold what the whole images hold; with an output
    node deleted the logic asks the engine for the whole images instead."""
    from RSORegistrationLib.engine_queue import StepRequest
    from RSORegistrationLib.step_requests import rso_request

    app, logic = phantom_logic(tmp_path, demo)
    logic.open_session(engine={"precision": "fp32"})
    logic.general()
    logic.wait(timeout=120)
    steps = []
    logic.feedback.on_step = lambda cmd, result: steps.append((cmd, result))

    def native_step():
        job = rso_request(logic.parameters(), logic.grid, demo.region_ras(), iterations=3, mode="native")
        job.args["min_gain"] = 0.0  # accepted whatever the guard would say: the viewer is under test
        logic._step(job)
        logic.wait(timeout=120)

    def shown() -> dict[str, np.ndarray]:
        params = logic.parameters()
        nodes = {
            name: getattr(params, f"{name}Volume") for name in ("warped", "difference", "jacobian", "change")
        }
        arrays = {name: array_from_volume(node) for name, node in nodes.items()}
        arrays["transform"] = sitk.GetArrayFromImage(field_from_transform_node(params.outputTransform))
        return arrays

    native_step()
    assert steps[-1][0] == "rso" and steps[-1][1]["patch"] and not steps[-1][1]["paths"]
    pasted = shown()
    assert pasted["change"].max() > 0
    logic._enqueue(StepRequest("viewer"))
    logic.wait(timeout=120)
    whole = shown()
    for name in pasted:
        np.testing.assert_allclose(pasted[name], whole[name], atol=1e-4, err_msg=name)

    params = logic.parameters()
    app.scene.RemoveNode(params.warpedVolume)
    native_step()
    assert [cmd for cmd, _ in steps[-2:]] == ["rso", "viewer"]
    assert logic.parameters().warpedVolume is not None and logic.parameters().warpedVolume.GetScene()
    logic.close()


def test_the_status_line_says_once_when_the_overlay_hides_the_images_noise(tmp_path, demo):
    """Two noisy images (as two CBCT phases are): after the first step the status line says how much of
    their difference the overlay leaves black; later steps of the same pair do not repeat it."""
    from rso.simulation.phantom import PhantomPair

    rng = np.random.default_rng(5)

    def noisy(image: sitk.Image) -> sitk.Image:
        voxels = sitk.GetArrayFromImage(image)
        out = sitk.GetImageFromArray((voxels + rng.normal(0.0, 120.0, voxels.shape)).astype(np.float32))
        out.CopyInformation(image)
        return out

    pair = PhantomPair(**{**vars(demo), "fixed": noisy(demo.fixed), "moving": noisy(demo.moving)})
    app, logic = phantom_logic(tmp_path, pair)
    said = []
    logic.open_session()
    logic.feedback.on_step = lambda cmd, result: said.append((cmd, logic.status))
    logic.general()
    logic.wait(timeout=120)
    logic.undo()
    logic.wait(timeout=120)
    logic.general()
    logic.wait(timeout=120)
    (first, status), *later = [(cmd, text) for cmd, text in said if cmd != "open"]
    assert first == "general" and "the overlay leaves differences within" in status
    band = float(status.split("within ")[1].split(" HU")[0])
    assert band > 200  # two images with 120 HU of noise each: a spread of about 170 HU
    assert [cmd for cmd, _ in later] == ["undo", "general"]
    assert not any("overlay leaves" in text for _, text in later)
