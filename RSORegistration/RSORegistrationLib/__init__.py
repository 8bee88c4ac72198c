"""RSORegistrationLib: the module's MRML layer (no Qt, no slicer.app).

Volume nodes <-> SimpleITK images, ROI nodes -> model-grid boxes, the engine's field <-> grid
transforms, overlays, loss/metrics tables and the logic that drives the engine's worker. Every
function takes the scene (or nodes) as an argument, so CI tests it on a real scene from the
slicer-core wheel. Importing this package imports nothing heavy; its modules import numpy,
SimpleITK, VTK and the engine's torch-free parts.
"""
