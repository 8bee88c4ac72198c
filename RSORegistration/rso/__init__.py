"""RSORegistration engine: deep interactive deformable registration with ISO and RSO.

This package knows nothing of Slicer, VTK or Qt; it runs from the command line, in tests, in
Slicer's Python console and on a GPU server alike.
"""

__version__ = "0.1.0"
