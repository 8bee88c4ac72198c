"""The engine's layout (docs/architecture.md §2), read with ``ast``: no cycles, one direction, short files.

cli -> evaluation / training -> simulation -> service -> core; ``rso.errors`` and ``rso.options``
are below everything. Slicer installs only the core, the service and the phantom, so those must
not reach anything else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ENGINE = REPO / "RSORegistration" / "rso"
MODULE_DIR = REPO / "RSORegistration"

# A package may import its own rank or lower; cycles are caught separately.
RANKS = {
    "rso": 0,
    "rso.errors": 0,
    "rso.options": 0,
    "rso.settings": 0,
    "rso.core": 0,
    "rso.service": 1,
    "rso.simulation": 2,
    "rso.acquisition": 2,  # may use the simulator's phase binning; never service or cli
    "rso.training": 3,
    "rso.evaluation": 3,
    "rso.cli": 4,
}
# What RSORegistration/CMakeLists.txt installs into Slicer: these modules and these packages.
IN_SLICER = {"rso", "rso.errors", "rso.options", "rso.settings", "rso.simulation", "rso.simulation.phantom"}
IN_SLICER_PACKAGES = ("rso.core", "rso.service")
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ENGINE.rglob("*.py"))}


MODULES = engine_modules()


def imported_modules(path: Path, modules=MODULES) -> set[str]:
    """Every engine module ``path`` imports, at file scope or inside functions (both are dependencies)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] == "rso"
        ):
            candidates = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            found.update(name for name in candidates if name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level and ENGINE in path.parents:
            raise AssertionError(f"{path}: relative import; the engine uses absolute imports")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
    return found - {"rso"}


def package_of(name: str) -> str:
    for package in sorted(RANKS, key=len, reverse=True):
        if name == package or name.startswith(package + "."):
            return package
    raise AssertionError(f"{name} belongs to no known package")


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def test_the_engine_has_no_import_cycles():
    visiting, done = [], set()

    def visit(name: str) -> None:
        if name in visiting:
            cycle = visiting[visiting.index(name) :] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        visiting.append(name)
        for other in sorted(GRAPH[name]):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_dependencies_flow_one_way(name):
    rank = RANKS[package_of(name)]
    upward = [other for other in GRAPH[name] if RANKS[package_of(other)] > rank]
    assert not upward, f"{name} (rank {rank}) imports a higher layer: {upward}"


def test_what_slicer_installs_needs_nothing_else():
    installed = IN_SLICER | {name for name in MODULES if package_of(name) in IN_SLICER_PACKAGES}
    for name in sorted(installed):
        outside = GRAPH[name] - installed
        assert not outside, f"{name} is installed in Slicer but imports {sorted(outside)}"
    for path in sorted((MODULE_DIR / "RSORegistrationLib").glob("*.py")) + [
        MODULE_DIR / "RSORegistration.py"
    ]:
        outside = imported_modules(path) - installed
        assert not outside, f"{path.name} imports engine modules Slicer does not get: {sorted(outside)}"


def test_no_engine_file_is_over_450_lines():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_argparse_lives_only_in_the_command_line():
    users = [
        name
        for name, path in MODULES.items()
        if "argparse" in path.read_text(encoding="utf-8") and package_of(name) != "rso.cli"
    ]
    assert not users, users


def test_registration_defaults_live_only_in_options():
    """The CLI, the worker, the session and Slicer take 100/400/15/"mse"/0.01/"auto" from rso.options."""
    literals = {100, 400, 15, "mse", 0.01, "auto"}
    files = [
        *sorted((ENGINE / "cli").glob("*.py")),
        *sorted((ENGINE / "service").glob("*.py")),
        ENGINE / "core" / "session.py",
        ENGINE / "core" / "workflow.py",
        ENGINE / "core" / "losses.py",
        MODULE_DIR / "RSORegistrationLib" / "parameters.py",
        MODULE_DIR / "RSORegistration.py",
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            defaults = []
            if isinstance(node, ast.keyword) and node.arg == "default":
                defaults.append(node.value)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defaults += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                defaults.append(node.value)
            for value in defaults:
                if (
                    isinstance(value, ast.Constant)
                    and not isinstance(value.value, bool)
                    and value.value in literals
                ):
                    raise AssertionError(
                        f"{path.name}:{value.lineno} declares the default {value.value!r}; "
                        "take it from rso.options"
                    )


# What the engine never imports: Slicer, VTK, Qt, the web stack and the layers above it. Only the
# ``review`` subcommand reaches the review app, and only inside its run function, so the engine and
# every other subcommand start without them (docs/architecture.md §2).
VIEWER_PACKAGES = {
    "slicer",
    "vtk",
    "vtkmodules",
    "qt",
    "ctk",
    "trame",
    "trame_server",
    "trame_client",
    "trame_slicer",
    "trame_vuetify",
    "RSORegistrationLib",
    "RSORegistrationReview",
}
LAZY_VIEWER_IMPORTS = {"rso.cli.review": {"RSORegistrationReview"}}


def _imports(nodes) -> set[str]:
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _outside_functions(node: ast.AST):
    """The nodes of a module that run when it is imported (function bodies excluded)."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
            yield from _outside_functions(child)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_engine_never_imports_slicer_vtk_qt_or_the_web_app(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    file_scope, anywhere = _imports(_outside_functions(tree)), _imports(ast.walk(tree))
    assert not file_scope & VIEWER_PACKAGES, (
        f"{name} imports {sorted(file_scope & VIEWER_PACKAGES)} at file scope"
    )
    allowed = LAZY_VIEWER_IMPORTS.get(name, set())
    assert not (anywhere & VIEWER_PACKAGES) - allowed, (
        f"{name} imports {sorted((anywhere & VIEWER_PACKAGES) - allowed)}"
    )
