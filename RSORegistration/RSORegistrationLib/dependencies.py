"""Which Python packages the engine's worker needs in Slicer's Python, and which are missing.

Nothing is installed here: the module asks the user first, installs torch through the PyTorch
extension (it picks the build that matches the GPU driver) and the rest with pip. The lower bounds
are the engine's own (pyproject.toml; a test keeps them equal).
"""

from __future__ import annotations

import re
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
