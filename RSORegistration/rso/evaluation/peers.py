"""Classical peers for the benchmark: elastix B-spline (whole image or box-masked) and ANTs SyN.

Each peer takes the same inputs as the session (SimpleITK fixed and moving images, LPS) and
returns a displacement field in the engine's convention: an ITK displacement field on the fixed
image's grid, LPS millimetres, mapping fixed points to moving points. The benchmark resamples it
onto the model grid and measures it with the session's own metrics, so every arm is scored alike.

itk-elastix and antspyx are benchmark-only dependencies (requirements-bench.txt); they are
imported when a peer runs, never by the extension.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rso.core.boxes import Box, VoxelBox
from rso.errors import InputError

log = logging.getLogger(__name__)

INSTALL_HINT = "install the bench extra: pip install -r requirements-bench.txt"


@dataclass(frozen=True)
class ElastixSettings:
    """elastix's default B-spline map (GetDefaultParameterMap("bspline")) with lung-suited choices.

    Four resolutions with a final control-point spacing of 10 mm, the spacing of the lung 4D-CT
    entries of the elastix model zoo; adaptive stochastic gradient descent on 2048 fresh random
    samples per iteration, its step size estimated by the displacement-distribution method (Qiao
    et al. 2016; elastix's default "Original" estimate took 25 s of a 29 s run on a small case
    on 2 cores, before any iteration); the default bending-energy penalty. The metric is normalised
    correlation rather than the default Mattes mutual information: both images are CBCT of the
    same scan and calibration, and on a pair with a known 5 mm shift (Testing/Python/test_bench.py)
    the mutual-information B-spline fit was biased by about 2 mm where correlation was within 0.1 mm.
    """

    resolutions: int = 4
    final_grid_spacing_mm: float = 10.0
    iterations: int = 500  # per resolution (the default map has 256)
    spatial_samples: int = 2048
    metric: str = "AdvancedNormalizedCorrelation"
    step_size_estimation: str = "DisplacementDistribution"
    bending_energy_weight: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class AntsSettings:
    """``ants.registration(type_of_transform="SyN")`` as the ANTs examples call it (affine, then SyN).

    Not bit-reproducible: the affine stage samples randomly in several ITK threads, and even with
    a fixed seed two runs on the test pair differed by up to 1-2 mm at single voxels. Determinism
    would need one thread (``ants.set_ants_deterministic``), which would misstate ANTs's speed.
    """

    type_of_transform: str = "SyN"
    reg_iterations: tuple[int, ...] = (40, 20, 0)  # antspyx's default for SyN


@dataclass
class PeerResult:
    """A peer's field (LPS mm on the fixed grid, fixed -> moving), its wall time and what it ran with."""

    field: sitk.Image
    seconds: float
    settings: dict
    extra: dict = field(default_factory=dict)


def require(module: str, package: str):
    """Import a benchmark-only package, or say clearly how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"this peer needs {package}, which is not installed: {INSTALL_HINT}") from None


PACKAGES = {"elastix": "itk-elastix", "ants": "antspyx"}


def available(peer: str) -> bool:
    """Whether a peer's package ("elastix" or "ants") is installed, without importing it (itk is slow to)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(PACKAGES[peer])
    except PackageNotFoundError:
        return False
    return True


_WARM: set[str] = set()


def warm_up(peer: str) -> None:
    """Load a peer's lazily wrapped classes once, outside any timing (itk takes 10-20 s on first use)."""
    if peer in _WARM:
        return
    if peer == "elastix":
        image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
        image.SetSpacing((4.0, 4.0, 4.0))
        everywhere = Box((-1.0, -1.0, -1.0), (61.0, 61.0, 61.0), VoxelBox((0, 0, 0), (16, 16, 16)))
        tiny = ElastixSettings(resolutions=1, final_grid_spacing_mm=32.0, iterations=2, spatial_samples=256)
        elastix_bspline(image, image, tiny, box=everywhere)  # the masked path loads every class both use
    else:
        require("ants", "antspyx")
    _WARM.add(peer)


# ----------------------------------------------------------------------------------- elastix
def elastix_parameter_object(itk, settings: ElastixSettings, masked: bool):
    """The one-map parameter object that ``settings`` describe (see ElastixSettings)."""
    parameters = itk.ParameterObject.New()
    bspline = parameters.GetDefaultParameterMap(
        "bspline", settings.resolutions, settings.final_grid_spacing_mm
    )
    bspline["Metric"] = [settings.metric, *bspline["Metric"][1:]]  # [similarity, bending energy]
    bspline["MaximumNumberOfIterations"] = [str(settings.iterations)]
    bspline["NumberOfSpatialSamples"] = [str(settings.spatial_samples)]
    bspline["Metric1Weight"] = [str(settings.bending_energy_weight)]
    bspline["ASGDParameterEstimationMethod"] = [settings.step_size_estimation]
    bspline["RandomSeed"] = [str(settings.seed)]
    bspline["WriteResultImage"] = ["false"]  # we only want the transform; the benchmark warps itself
    if masked:
        # A 32-64 mm box is a small part of the image: sample from the mask's own voxel list (random
        # coordinates would be rejected outside it too often), and never erode the box away at the
        # coarse levels.
        bspline["ImageSampler"] = ["RandomSparseMask"]
        bspline["ErodeMask"] = ["false"]
    parameters.AddParameterMap(bspline)
    return parameters


def elastix_bspline(
    fixed: sitk.Image,
    moving: sitk.Image,
    settings: ElastixSettings = ElastixSettings(),
    box: Box | None = None,
) -> PeerResult:
    """elastix multi-resolution B-spline; with ``box``, restricted to it by a fixed-image mask.

    Should the fast step-size estimate throw elastix off (it can overshoot until too many samples
    leave the moving image), the run is repeated with elastix's default estimate; the wall time
    then counts both attempts, and ``extra`` says so.
    """
    itk = require("itk", "itk-elastix")
    if not hasattr(itk, "elastix_registration_method"):
        raise InputError(f"itk is installed without elastix (itk-elastix): {INSTALL_HINT}")
    start = time.perf_counter()
    fixed_itk, moving_itk = _to_itk(itk, fixed), _to_itk(itk, moving)
    mask = _to_itk(itk, box_mask(fixed, box), as_mask=True) if box is not None else None
    extra = {}
    try:
        transform = _elastix(itk, fixed_itk, moving_itk, mask, settings)
    except RuntimeError as exc:
        if settings.step_size_estimation == "Original":
            raise
        log.warning(
            "elastix failed with %s step sizes (%s); repeating with elastix's default estimate",
            settings.step_size_estimation,
            str(exc).strip().splitlines()[-1],
        )
        extra["failed_first"] = asdict(settings)
        settings = replace(settings, step_size_estimation="Original")
        transform = _elastix(itk, fixed_itk, moving_itk, mask, settings)
    with tempfile.TemporaryDirectory(prefix="rso-transformix-") as folder:  # it writes the field to disk too
        deformation = itk.transformix_deformation_field(moving_itk, transform, output_directory=folder)
        field_image = _from_itk_field(itk, deformation)
    seconds = time.perf_counter() - start
    log.info("elastix B-spline%s done in %.1f s", " (box mask)" if box is not None else "", seconds)
    return PeerResult(field_image, seconds, asdict(settings) | {"masked": box is not None}, extra)


def _elastix(itk, fixed, moving, mask, settings: ElastixSettings):
    parameters = elastix_parameter_object(itk, settings, masked=mask is not None)
    kwargs = {"fixed_mask": mask} if mask is not None else {}
    _, transform = itk.elastix_registration_method(
        fixed, moving, parameter_object=parameters, log_to_console=False, **kwargs
    )
    return transform


def box_mask(reference: sitk.Image, box: Box) -> sitk.Image:
    """1 on the reference's voxels whose centres lie in the box's LPS bounds, 0 elsewhere."""
    size = reference.GetSize()
    index = np.stack(
        np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")[::-1], axis=-1
    )  # (z,y,x,[i,j,k])
    matrix = np.array(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    points = index.reshape(-1, 3) @ matrix.T + np.array(reference.GetOrigin())
    inside = np.all(
        (points >= np.array(box.lps_min) - 1e-6) & (points <= np.array(box.lps_max) + 1e-6), axis=1
    )
    if not inside.any():
        raise InputError("the box holds no voxel of the fixed image; the masked peer has nothing to fit")
    mask = sitk.GetImageFromArray(inside.reshape(size[::-1]).astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def _to_itk(itk, image: sitk.Image, as_mask: bool = False):
    """A SimpleITK scalar image as an ITK Python image with the same geometry (float, or uint8 for a mask)."""
    array = sitk.GetArrayFromImage(image).astype(np.uint8 if as_mask else np.float32)
    result = itk.GetImageFromArray(np.ascontiguousarray(array))
    result.SetSpacing([float(v) for v in image.GetSpacing()])
    result.SetOrigin([float(v) for v in image.GetOrigin()])
    result.SetDirection(itk.GetMatrixFromArray(np.array(image.GetDirection(), float).reshape(3, 3)))
    return result


def _from_itk_field(itk, deformation) -> sitk.Image:
    """transformix's deformation field (physical units, fixed -> moving) as a SimpleITK field image."""
    array = np.asarray(itk.GetArrayFromImage(deformation), np.float64)
    result = sitk.GetImageFromArray(array, isVector=True)
    result.SetSpacing([float(v) for v in deformation.GetSpacing()])
    result.SetOrigin([float(v) for v in deformation.GetOrigin()])
    result.SetDirection(
        np.asarray(itk.GetArrayFromMatrix(deformation.GetDirection()), float).ravel().tolist()
    )
    return result


# -------------------------------------------------------------------------------------- ANTs
def ants_syn(fixed: sitk.Image, moving: sitk.Image, settings: AntsSettings = AntsSettings()) -> PeerResult:
    """ANTs SyN; its forward transforms (warp then affine) composed into one displacement field.

    ``fwdtransforms`` are the ones ``apply_transforms`` uses to bring the moving image onto the
    fixed one, so they map fixed points to moving points: the engine's convention, once composed.
    """
    ants = require("ants", "antspyx")
    with tempfile.TemporaryDirectory(prefix="rso-ants-") as folder:
        folder = Path(folder)
        # ANTs reads through ITK, so a file keeps the geometry (direction included) exactly.
        sitk.WriteImage(sitk.Cast(fixed, sitk.sitkFloat32), str(folder / "fixed.mha"))
        sitk.WriteImage(sitk.Cast(moving, sitk.sitkFloat32), str(folder / "moving.mha"))
        start = time.perf_counter()
        fixed_ants = ants.image_read(str(folder / "fixed.mha"))
        moving_ants = ants.image_read(str(folder / "moving.mha"))
        result = ants.registration(
            fixed_ants,
            moving_ants,
            type_of_transform=settings.type_of_transform,
            reg_iterations=tuple(settings.reg_iterations),
            outprefix=str(folder / "syn_"),
            verbose=False,
        )
        composite = ants.apply_transforms(
            fixed_ants, moving_ants, result["fwdtransforms"], compose=str(folder / "composite_")
        )
        field_image = sitk.ReadImage(str(composite), sitk.sitkVectorFloat64)
        seconds = time.perf_counter() - start
    log.info("ANTs %s done in %.1f s", settings.type_of_transform, seconds)
    return PeerResult(field_image, seconds, asdict(settings))
