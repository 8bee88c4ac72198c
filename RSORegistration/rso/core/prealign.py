"""A rigid pre-alignment that gives a registration its initial transform (``--prealign rigid``).

For a CT and a CBCT acquired on different days, the patient lies elsewhere in each scanner's frame:
centimetres and degrees the general model was never trained to bridge. SimpleITK registers them rigidly
first (an Euler transform, Mattes mutual information, so that CT and CBCT intensities need not agree;
three resolutions), and the session then registers the fixed image against the moving image resampled
through the result (rso.core.initial). The transform maps fixed points to moving points (LPS mm).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rso.core.geometry import AIR_HU
from rso.core.initial import parts
from rso.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RigidSettings:
    """The pre-alignment's recipe (fixed, not a user choice: it only has to land in the model's reach)."""

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_voxels: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 100  # per resolution: 300 at most in all
    histogram_bins: int = 50
    samples: int = 50_000  # random metric samples per resolution (at most 25 % of the voxels)
    step_mm: float = 2.0  # the first step of the gradient descent; it halves as the metric stops improving
    min_step_mm: float = 1e-3
    seed: int = 0


def rigid_prealignment(
    fixed: sitk.Image, moving: sitk.Image, settings: RigidSettings = RigidSettings()
) -> sitk.Euler3DTransform:
    """The Euler transform (fixed -> moving points) that best aligns the two images by mutual information.

    It starts from whichever of two the metric prefers: the images' own frames as they are, or the
    moving image shifted so that the two bodies' centres of mass meet (rotation about the fixed one's).
    """
    start = time.perf_counter()
    fixed, moving = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)
    method = _method(fixed, settings)
    candidates = _starts(fixed, moving)
    values = []
    for candidate in candidates:
        method.SetInitialTransform(candidate, inPlace=False)
        values.append(method.MetricEvaluate(fixed, moving))
    initial = candidates[int(np.argmin(values))]
    method.SetInitialTransform(initial, inPlace=False)
    try:
        found = parts(method.Execute(fixed, moving))  # SimpleITK returns [the optimised Euler] as a composite
    except RuntimeError as exc:
        raise InputError(f"the rigid pre-alignment failed: {str(exc).strip().splitlines()[-1]}") from None
    result = sitk.Euler3DTransform(found[-1])
    log.info(
        "rigid pre-alignment in %.1f s (%s): rotation %s deg, translation %s mm, "
        "mutual information %.4f -> %.4f",
        time.perf_counter() - start,
        method.GetOptimizerStopConditionDescription().split(":")[0],
        np.round(np.degrees(result.GetParameters()[:3]), 2).tolist(),
        np.round(result.GetTranslation(), 2).tolist(),
        min(values),
        method.GetMetricValue(),
    )
    return result


def _method(fixed: sitk.Image, settings: RigidSettings) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    share = min(0.25, settings.samples / float(np.prod(fixed.GetSize())))
    method.SetMetricSamplingPercentage(share, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.step_mm,
        minStep=settings.min_step_mm,
        numberOfIterations=settings.iterations,
        relaxationFactor=0.5,
    )
    method.SetOptimizerScalesFromPhysicalShift()  # a radian and a millimetre weighed by how far they move
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_voxels))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def _starts(fixed: sitk.Image, moving: sitk.Image) -> list[sitk.Euler3DTransform]:
    """[the centres of mass met, the frames as they are], both rotating about the fixed body's centre."""
    # Moments of HU + 1000 (air 0): the centre of the body, not of the field of view.
    fixed_mass, moving_mass = (sitk.Clamp(image - AIR_HU, lowerBound=0.0) for image in (fixed, moving))
    centred = sitk.CenteredTransformInitializer(
        fixed_mass, moving_mass, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    centred = sitk.Euler3DTransform(centred)
    as_given = sitk.Euler3DTransform()
    as_given.SetCenter(centred.GetCenter())
    return [centred, as_given]
