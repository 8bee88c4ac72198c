"""Which Python packages the engine's worker needs in Slicer's Python, which are missing, and installing
them once the user agrees.

``ensure_dependencies`` gets the Slicer application's parts from the module (the PyTorch extension's
logic, which picks the torch build that matches the GPU driver, the dialog that asks the user, pip):
this package never imports them. The lower bounds are the engine's own (pyproject.toml; a test keeps
them equal).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import metadata

TORCH_REQUIREMENT = ">=2.2"
# SimpleITK and numpy come with Slicer; torch comes through PyTorchUtils.
REQUIREMENTS = ("monai>=1.4", "nibabel>=5.0", "scipy>=1.10", "matplotlib>=3.7", "tqdm>=4.66")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def is_satisfied(requirement: str) -> bool:
    """Whether a 'name>=version' requirement is installed in this Python."""
    name, _, minimum = requirement.partition(">=")
    try:
        installed = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        return False
    return not minimum or _version_tuple(installed) >= _version_tuple(minimum)


def missing_requirements(requirements=REQUIREMENTS) -> list[str]:
    return [requirement for requirement in requirements if not is_satisfied(requirement)]


def ensure_dependencies(
    torch_logic, confirm: Callable[[str], bool] | None, pip_install: Callable[[list[str]], None], tr=str
) -> bool:
    """Install what is missing once the user agrees; False when they decline.

    ``torch_logic``: the PyTorch extension's logic (``torchInstalled()``, ``installTorch(...)``; it picks
    the build that matches the GPU driver). ``confirm(question)``: the dialog that asks the user (True:
    go ahead); None installs without asking. ``pip_install(requirements)``: the engine's other packages.
    ``tr``: the module's translation function. Raises RuntimeError when torch could not be installed.
    """
    need_torch = not torch_logic.torchInstalled()
    missing = missing_requirements()
    if not need_torch and not missing:
        return True
    packages = ", ".join((["torch"] if need_torch else []) + missing)
    question = tr(
        "RSO Registration needs these Python packages: {packages}.\nInstall them now? "
        "This downloads up to a few GB and can take several minutes."
    ).format(packages=packages)
    if confirm is not None and not confirm(question):
        return False
    if (
        need_torch
        and torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None
    ):
        raise RuntimeError(tr("PyTorch could not be installed."))
    if missing:
        pip_install(missing)
    return True


def pytorch_utils_logic(tr: Callable[[str], str]):
    """The PyTorch extension's logic (it installs torch for Slicer's Python); a one-line error without it."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(
            tr("RSO Registration needs the PyTorch extension: install it in the Extensions Manager.")
        ) from None
    return PyTorchUtils.PyTorchUtilsLogic()
