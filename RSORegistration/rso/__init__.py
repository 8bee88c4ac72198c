"""RSORegistration engine: deep interactive deformable registration with ISO and RSO.

This package knows nothing of Slicer, VTK or Qt; it runs from the command line, in tests, in
Slicer's Python console and on a GPU server alike.
"""

__version__ = "0.1.0"

# Harmless warnings MONAI and torch print on every run (MONAI's native grid_sample fallback, a
# deprecation inside MONAI's DiffusionLoss); the CLI and the worker hide them from users.
KNOWN_LIBRARY_WARNINGS = (
    ".*Using PyTorch native grid_sample.*",
    ".*non-tuple sequence for multidimensional indexing.*",
)


def silence_known_warnings() -> None:
    import warnings

    for pattern in KNOWN_LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
