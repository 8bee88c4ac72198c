"""Static checks on the Slicer (Qt) part, which cannot run here: the module file, its .ui,
the extension's CMake and Extensions Index files, and the boundaries between the layers."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[3]
MODULE_DIR = REPO / "RSORegistration"
MODULE_FILE = MODULE_DIR / "RSORegistration.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "RSORegistration.ui"
LIB_DIR = MODULE_DIR / "RSORegistrationLib"
# rso itself may be imported (rso.options is plain tuples); anything that pulls numpy or torch may not.
HEAVY = {"torch", "monai", "SimpleITK", "numpy", "scipy", "nibabel", "matplotlib", "skimage"} | {
    "RSORegistrationLib"  # it imports SimpleITK and numpy
}

# Every widget the module uses, with the class it must have in the .ui file.
EXPECTED_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "settingsCollapsibleButton": "ctkCollapsibleButton",
    "fixedSelector": "qMRMLNodeComboBox",
    "movingSelector": "qMRMLNodeComboBox",
    "truthSelector": "qMRMLNodeComboBox",
    "regionSelector": "qMRMLNodeComboBox",
    "modelPathLineEdit": "ctkPathLineEdit",
    "deviceComboBox": "QComboBox",
    "isoIterationsSpinBox": "QSpinBox",
    "rsoIterationsSpinBox": "QSpinBox",
    "rsoModeComboBox": "QComboBox",
    "compositionComboBox": "QComboBox",
    "seedSpinBox": "QSpinBox",
    "autoRefineCheckBox": "QCheckBox",
    "registerButton": "QPushButton",
    "isoButton": "QPushButton",
    "drawRegionButton": "QPushButton",
    "refineRegionButton": "QPushButton",
    "undoButton": "QPushButton",
    "cancelButton": "QPushButton",
    "exportButton": "QPushButton",
    "reopenButton": "QPushButton",
    "clearCacheButton": "QPushButton",
    "exportDirectoryButton": "ctkDirectoryButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "metricsLabel": "QLabel",
    "metricsTableView": "qMRMLTableView",
    "lossPlotWidget": "qMRMLPlotWidget",
    "labelsSelector": "qMRMLNodeComboBox",
    "propagateLabelsButton": "QPushButton",
    "overlayComboBox": "QComboBox",
    "initialTransformSelector": "qMRMLNodeComboBox",
    "prealignCheckBox": "QCheckBox",  # prealign is a str ("" or "rigid"): wired by hand, not bound
    "fitMaskSelector": "qMRMLNodeComboBox",
}
# parameterNodeWrapper's GUI connectors: widget class -> the parameter types it can represent.
CONNECTABLE = {
    "qMRMLNodeComboBox": {"node"},
    "QSpinBox": {"int"},
    "QComboBox": {"str"},
    "QCheckBox": {"bool"},
    "ctkPathLineEdit": {"Path"},
    "QLineEdit": {"str"},
}


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def ui_names_used(tree: ast.Module) -> set[str]:
    """Every X in self.ui.X / ui.X."""
    names = set()
    for node in ast.walk(tree):
        if (
            (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui"
            )
            or isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "ui"
        ):
            names.add(node.attr)
    return names


def top_level_imports(tree: ast.Module) -> set[str]:
    """Modules imported when the file is imported (module body, including top-level if/try blocks)."""
    found, pending = set(), list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending += [
                n for block in ("body", "orelse", "finalbody", "handlers") for n in getattr(node, block, [])
            ]
        elif isinstance(node, ast.ExceptHandler):
            pending += node.body
    return found


def test_module_file_parses_and_stays_thin(module_tree):
    lines = MODULE_FILE.read_text().splitlines()
    assert len(lines) <= 400, f"RSORegistration.py has {len(lines)} lines; move logic to RSORegistrationLib"
    classes = {node.name for node in module_tree.body if isinstance(node, ast.ClassDef)}
    assert {
        "RSORegistration",
        "RSORegistrationWidget",
        "RSORegistrationLogic",
        "RSORegistrationTest",
        "RSORegistrationParameterNode",
    } <= classes


def test_nothing_heavy_is_imported_at_file_scope(module_tree):
    assert not top_level_imports(module_tree) & HEAVY


def test_every_ui_name_the_widget_uses_exists_with_its_class(module_tree, ui_widgets):
    used = ui_names_used(module_tree)
    assert used, "the widget uses no ui.<name>: the check would be empty"
    unknown = used - set(EXPECTED_WIDGETS)
    assert not unknown, f"add these to EXPECTED_WIDGETS with their class: {sorted(unknown)}"
    for name in sorted(used):
        assert name in ui_widgets, f"ui.{name} is not in {UI_FILE.name}"
        assert ui_widgets[name].get("class") == EXPECTED_WIDGETS[name], name


def test_every_widget_the_panel_enables_exists_with_its_class(ui_widgets):
    """The widget enables what RSORegistrationLib.panel names (by name: the check above cannot see them)."""
    sys.path.insert(0, str(MODULE_DIR))
    from RSORegistrationLib.panel import enabled_widgets
    from RSORegistrationLib.parameters import RunParameters

    names = set(enabled_widgets(RunParameters()))
    assert names <= set(EXPECTED_WIDGETS), sorted(names - set(EXPECTED_WIDGETS))
    for name in sorted(names):
        assert ui_widgets[name].get("class") == EXPECTED_WIDGETS[name], name


def test_the_panel_follows_the_state():
    """Only Cancel while a step runs; steps need a session; Reopen only for a saved session not open."""
    sys.path.insert(0, str(MODULE_DIR))
    from RSORegistrationLib.panel import enabled_widgets, metrics_text, progress_percent
    from RSORegistrationLib.parameters import RunParameters

    def enabled(params, core=None) -> set[str]:
        return {name for name, on in enabled_widgets(params, core).items() if on}

    pair = RunParameters(fixedVolume=object(), movingVolume=object(), region=object(), sessionFolder="s")
    running = SimpleNamespace(busy=True, can_step=True, history=[{}])
    assert enabled(pair, running) == {"cancelButton"}
    idle = enabled(pair, SimpleNamespace(busy=False, can_step=True, history=[{}]))
    assert "cancelButton" not in idle and "reopenButton" not in idle
    assert {"isoButton", "refineRegionButton", "undoButton", "exportButton", "registerButton"} <= idle
    stopped = enabled(pair, SimpleNamespace(busy=False, can_step=False, history=[]))
    assert "reopenButton" in stopped and not stopped & {"isoButton", "drawRegionButton", "undoButton"}
    assert enabled(RunParameters()) == {
        "clearCacheButton",
        "inputsCollapsibleButton",
        "settingsCollapsibleButton",
    }
    metrics = {"rmse_hu": 52.14, "rmse_hu_box": 60.0, "tre_mm": {"mean": 1.789}}
    assert metrics_text([{"metrics": metrics}]) == "RMSE 52.1 HU, in region 60.0 HU, TRE 1.79 mm"
    assert metrics_text([]) == ""
    assert int(progress_percent({"iteration": 29, "iterations": 100})) == 29


def test_dependencies_are_installed_only_once_the_user_agrees(monkeypatch):
    sys.path.insert(0, str(MODULE_DIR))
    from RSORegistrationLib import dependencies

    class TorchLogic:  # PyTorchUtils.PyTorchUtilsLogic's two calls
        def __init__(self, installed: bool, works: bool = True):
            self.installed, self.works, self.calls = installed, works, []

        def torchInstalled(self) -> bool:
            return self.installed

        def installTorch(self, **kwargs):
            self.calls.append(kwargs)
            return "torch" if self.works else None

    monkeypatch.setattr(dependencies, "missing_requirements", lambda: ["monai>=1.4"])
    questions, installed = [], []
    declined = TorchLogic(False)
    assert not dependencies.ensure_dependencies(
        declined, lambda q: questions.append(q) or False, installed.append
    )
    assert "torch, monai>=1.4" in questions[0] and not declined.calls and not installed
    agreed = TorchLogic(False)
    assert dependencies.ensure_dependencies(agreed, lambda q: True, installed.append)
    assert agreed.calls == [
        {"askConfirmation": False, "torchVersionRequirement": dependencies.TORCH_REQUIREMENT}
    ]
    assert installed == [["monai>=1.4"]]
    with pytest.raises(RuntimeError, match="PyTorch could not be installed"):
        dependencies.ensure_dependencies(TorchLogic(False, works=False), None, installed.append)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: [])
    assert dependencies.ensure_dependencies(
        TorchLogic(True), lambda q: False, installed.append
    )  # nothing asked


def test_ui_file_is_a_module_panel(ui_widgets):
    root = ET.parse(UI_FILE).getroot()
    assert root.findtext("class") == "RSORegistration"
    assert root.find("widget").get("class") == "qMRMLWidget"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in ui_widgets.values()}
    assert {c for c in used if not c.startswith("Q")} <= declared  # Designer needs each custom class declared
    scene_receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    }
    mrml_widgets = {
        name
        for name, w in ui_widgets.items()
        if w.get("class", "").startswith("qMRML") and name != "RSORegistration"
    }
    assert mrml_widgets <= scene_receivers, f"MRML widgets without a scene: {mrml_widgets - scene_receivers}"


def test_ui_parameter_names_are_parameters_of_the_right_type(ui_widgets):
    sys.path.insert(0, str(MODULE_DIR))
    from RSORegistrationLib.parameters import NODE_FIELDS, PATH_FIELDS, RunParameters

    types = {f.name: ("node" if f.name in NODE_FIELDS else f.type) for f in fields(RunParameters)}
    types.update(dict.fromkeys(PATH_FIELDS, "Path"))  # str in the dataclass, a Path in the widget's wrapper
    connected = {}
    for name, widget in ui_widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                connected[name] = prop.findtext("string")
    assert len(connected) >= 12
    for widget_name, parameter in connected.items():
        assert parameter in types, f"{widget_name} is bound to unknown parameter {parameter!r}"
        assert types[parameter] in CONNECTABLE[ui_widgets[widget_name].get("class")], (widget_name, parameter)


def test_projection_geometry_and_placement_have_file_selectors(ui_widgets):
    """Artefact matching's inputs, under Inputs: an RTK geometry file per volume, the optional placement."""
    inputs = {w.get("name") for w in ui_widgets["inputsCollapsibleButton"].iter("widget")}
    for name, parameter, name_filter in (
        ("fixedGeometryPathLineEdit", "fixedGeometryFile", "RTK geometry (*.xml)"),
        ("movingGeometryPathLineEdit", "movingGeometryFile", "RTK geometry (*.xml)"),
        ("placementPathLineEdit", "placementFile", "ITK transform (*.tfm *.txt)"),
    ):
        props = {p.get("name"): p for p in ui_widgets[name].findall("property")}
        assert ui_widgets[name].get("class") == "ctkPathLineEdit" and name in inputs, name
        assert props["SlicerParameterName"].findtext("string") == parameter, name
        assert [s.text for s in props["nameFilters"].iter("string")] == [name_filter], name
        assert "artefact matching is off" in props["toolTip"].findtext("string"), name


STUBS = textwrap.dedent("""
    import json, sys, types
    import slicer  # the real slicer-core: MRML classes and slicer.util.VTKObservationMixin
    captured = {}
    def module(name, **attrs):
        mod = types.ModuleType(name); mod.__dict__.update(attrs); sys.modules[name] = mod; return mod
    class Base:
        def __init__(self, parent=None, *args, **kwargs): self.parent = parent
    def parameterNodeWrapper(cls):
        captured["annotations"] = {k: getattr(v, "__name__", str(v)) for k, v in cls.__annotations__.items()}
        captured["defaults"] = {k: getattr(cls, k) for k in cls.__annotations__ if hasattr(cls, k)}
        return cls
    class Choice:
        def __init__(self, choices): self.choices = choices
    class WithinRange:
        def __init__(self, low, high): pass
    module("qt"); module("ctk")
    slicer.i18n = module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    slicer.parameterNodeWrapper = module("slicer.parameterNodeWrapper",
                                         parameterNodeWrapper=parameterNodeWrapper,
                                         Choice=Choice, WithinRange=WithinRange)
    slicer.ScriptedLoadableModule = module("slicer.ScriptedLoadableModule", ScriptedLoadableModule=Base,
        ScriptedLoadableModuleWidget=Base, ScriptedLoadableModuleLogic=Base, ScriptedLoadableModuleTest=Base)
    before = set(sys.modules)
    import importlib.util
    spec = importlib.util.spec_from_file_location("RSORegistration", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    parent = types.SimpleNamespace()
    mod.RSORegistration(parent)
    loaded = sorted({name.split(".")[0] for name in set(sys.modules) - before})
    print(json.dumps({"loaded": loaded, "title": parent.title, "categories": parent.categories,
                      "defaults": {k: str(v) for k, v in captured["defaults"].items()},
                      "annotations": captured["annotations"]}))
""")


@pytest.fixture(scope="module")
def imported_module():
    """Import the module file with stand-ins for Qt and the Slicer app's Python helpers, in a child
    process."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    done = subprocess.run(
        [sys.executable, "-c", STUBS, str(MODULE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(MODULE_DIR),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_module_loads_nothing_heavy(imported_module):
    assert not set(imported_module["loaded"]) & HEAVY, imported_module["loaded"]
    assert imported_module["title"] == "RSO Registration" and imported_module["categories"] == [
        "Registration"
    ]


def test_parameter_node_wrapper_declares_the_lib_parameters(imported_module):
    sys.path.insert(0, str(MODULE_DIR))
    from RSORegistrationLib.parameters import PATH_FIELDS, RunParameters

    defaults = RunParameters()
    assert list(imported_module["annotations"]) == [f.name for f in fields(RunParameters)]
    paths = {name for name, kind in imported_module["annotations"].items() if kind == "Path"}
    assert paths == set(PATH_FIELDS)  # ctkPathLineEdit binds only a Path
    for name, text in imported_module["defaults"].items():
        assert text == str(getattr(defaults, name)), name


def test_lib_and_review_app_never_touch_qt_or_the_application():
    for path in sorted(LIB_DIR.glob("*.py")) + sorted((MODULE_DIR / "RSORegistrationReview").glob("*.py")):
        source = path.read_text()
        imports = top_level_imports(ast.parse(source)) | {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not imports & {"qt", "ctk", "PythonQt"}, path.name
        uses = {
            node.attr
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "slicer"
        }
        assert not uses & {"app", "mrmlScene", "modules"}, path.name  # the scene comes in as an argument


def test_extension_cmake_files():
    top = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\s*\(\s*RSORegistration\s*\)", top)
    assert re.search(r'set\(EXTENSION_CATEGORY\s+"Registration"\)', top)
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"PyTorch"\)', top)
    assert "add_subdirectory(RSORegistration)" in top
    # The Extensions Index reads the icon and screenshot URLs with these patterns; they must name files here.
    prefix = "https://raw.githubusercontent.com/rsoregistration/SlicerRSORegistration/main/"
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', top)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', top)
    assert icon and shots
    for url in [icon[0], *shots[0].split()]:
        assert url.startswith(prefix) and (REPO / url[len(prefix) :]).is_file(), url
    module = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in module and "slicerMacroBuildScriptedModule" in module
    for pattern in (
        "${MODULE_NAME}Lib/*.py",
        "rso/core/*.py",
        "rso/service/*.py",
        "rso/errors.py",
        "rso/options.py",
        "rso/simulation/phantom.py",
        "rso/resources/*",
        "Resources/UI/${MODULE_NAME}.ui",
        "Resources/Icons/${MODULE_NAME}.png",
    ):
        assert pattern in module, pattern
    for kept_out in ("rso/cli", "rso/evaluation", "rso/training", "rso/*.py", "rso/simulation/*.py"):
        assert kept_out not in module, kept_out  # Slicer gets only what the module needs


def test_extensions_index_descriptor():
    entry = json.loads((REPO / "RSORegistration.json").read_text())
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "build_subdirectory",
        "enabled",
        "tier",
    }  # slicer-extension-catalog-entry-schema-v1.0.1
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] == "Registration" and entry["scm_url"].startswith("https://")
    assert entry["build_dependencies"] == ["PyTorch"] and 1 <= entry["tier"] <= 5


def test_icon_is_a_128_pixel_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "RSORegistration.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def test_packages_installed_in_slicer_match_the_engine_requirements():
    tomllib = pytest.importorskip("tomllib")
    sys.path.insert(0, str(MODULE_DIR))
    from RSORegistrationLib.dependencies import REQUIREMENTS, TORCH_REQUIREMENT

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(REQUIREMENTS) <= set(declared)
    assert f"torch{TORCH_REQUIREMENT}" in declared


def test_slicer_process_stays_free_of_torch():
    """The module's logic and MRML layer run in Slicer before torch is installed: only the worker needs it."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import RSORegistrationLib.logic, RSORegistrationLib.results, RSORegistrationLib.backends, "
        "RSORegistrationLib.phantom, RSORegistrationLib.dependencies, RSORegistrationLib.panel, "
        "RSORegistrationLib.run_plan; "
        "print(sorted(m for m in ('torch', 'monai', 'nibabel', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
