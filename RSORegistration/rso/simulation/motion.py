"""A breathing motion model: smooth, invertible displacement fields from end-exhale to any phase.

The field for phase t maps a point x of the end-exhale image (phase 0) to where that tissue is at
phase t, in LPS millimetres: T_t(x) = x + u_t(x). That is the ITK convention for the pair
(fixed = phase 0, moving = phase t): resampling the phase-t image through u_t gives phase 0.

The model (all terms vanish at phase 0):
* superior-inferior motion, zero at the lung apex, growing smoothly to its maximum at the lung
  base (the diaphragm), decaying slowly below it (abdominal organs follow the diaphragm);
* the SI motion is weighted by a smoothed mask of the lungs and what lies under the diaphragm
  below them, so the chest wall, spine and mediastinum move much less than the lungs: a smooth
  stand-in for the lungs sliding along the chest wall (a truly discontinuous slide would not be
  a smooth invertible field on one grid);
* a few millimetres of anterior and lateral expansion of the body, growing toward the abdomen;
* a smooth random B-spline perturbation that scales with the breathing amplitude, and a second one
  that differs between inhale and exhale (hysteresis);
* the breathing curve b(t) = sin^(2n)(pi t) (Lujan's cos^(2n) model shifted so that phase 0 is end
  exhale): a long rest at exhale, a short peak at end inhale, t = 0.5.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

import rso.core.metrics as metrics
from rso.core.imageio import index_to_physical_matrix
from rso.errors import InputError
from rso.simulation.lesion import Lesion, LesionParams, lesion_patterns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionParams:
    si_amplitude_mm: tuple[float, float] = (
        8.0,
        25.0,
    )  # per-case SI excursion at the diaphragm, drawn uniformly
    ap_amplitude_mm: tuple[float, float] = (2.0, 5.0)  # anterior excursion of the front of the body
    lr_amplitude_mm: tuple[float, float] = (1.0, 3.0)  # lateral excursion of each side of the body
    perturbation_mm: float = 1.0  # RMS, inside the body, of the smooth random field at end inhale
    hysteresis_mm: float = 0.7  # RMS of the field that differs between inhale and exhale
    perturbation_spacing_mm: float = 60.0  # B-spline control-point spacing: the random fields' smoothness
    below_diaphragm_decay_mm: float = 80.0  # Gaussian fall-off of the SI motion below the lung base
    sliding: bool = True  # chest wall moves less than the lungs (see module docstring)
    sliding_sigma_mm: float = (
        10.0  # width of the smooth lung/chest-wall transition; 6 mm gives det J < 0.2 at 25 mm
    )
    breathing_exponent: int = 2  # n in b(t) = sin^(2n)(pi t)
    # The lower lungs lag the upper ones by this fraction of a cycle (0: they move together). A
    # phase lag of the lower lobes is a local motion a whole-image fit weighs little.
    lower_lobe_lag: float = 0.0
    lesion: LesionParams | None = None  # an inserted lesion with its own trajectory (rso.simulation.lesion)


@dataclass(frozen=True)
class CaseMotion:
    """The per-case amplitudes drawn from the seed, in mm, and the landmarks they are applied at."""

    seed: int
    si_amplitude_mm: float
    ap_amplitude_mm: float
    lr_amplitude_mm: float
    lung_apex_s_mm: float  # LPS z of the lung apex (98th percentile of lung voxels)
    lung_base_s_mm: float  # LPS z of the lung base (2nd percentile), where the SI motion peaks


def breathing_curve(t: float, exponent: int = 2) -> float:
    """Breathing amplitude in [0, 1] at phase t in [0, 1): 0 at end exhale (t = 0), 1 at end inhale
    (t = 0.5)."""
    return float(np.sin(np.pi * t) ** (2 * exponent))


def lagged_curve(t: float, lag: float, exponent: int = 2) -> float:
    """b(t - lag) - b(-lag): the breathing curve delayed by ``lag``, still zero at end exhale (t = 0)."""
    return breathing_curve(t - lag, exponent) - breathing_curve(-lag, exponent)


def hysteresis_curve(t: float) -> float:
    """Signed weight of the hysteresis field: zero at end exhale and end inhale, opposite on the two paths."""
    return float(np.sin(2 * np.pi * t))


class BreathingMotion:
    """The motion of one case: fixed spatial patterns on the CT's grid, each with its own curve in time.

    u_t(x) = sum over terms of curve(t) * pattern(x); every curve is zero at end exhale (t = 0).
    """

    def __init__(
        self,
        ct: sitk.Image,
        body: sitk.Image,
        lungs: sitk.Image,
        params: MotionParams = MotionParams(),
        seed: int = 0,
        lesion: Lesion | None = None,
    ) -> None:
        _check_axis_aligned(ct)
        self.reference = ct
        self.params = params
        rng = np.random.default_rng(seed)
        body_a = sitk.GetArrayFromImage(body).astype(bool)
        lungs_a = sitk.GetArrayFromImage(lungs).astype(bool)
        if not lungs_a.any():
            raise InputError("the lung mask is empty; the breathing motion needs lungs")
        coords = _physical_axes(ct)
        self.case = _draw_case(params, seed, rng, lungs_a, coords)
        breathing = self._breathing_pattern(body_a, lungs_a, coords)  # (z, y, x, 3), at b = 1
        weight = _smooth(body_a, 5.0, ct.GetSpacing())
        breathing += _random_field(ct, params.perturbation_mm, params, rng, weight, body_a)
        hysteresis = _random_field(ct, params.hysteresis_mm, params, rng, weight, body_a)
        exponent = params.breathing_exponent
        lower = self._lower_lobe_weight(coords[2])[:, None, None, None] if params.lower_lobe_lag else 0.0
        self.terms = [
            ("breathing", breathing * (1.0 - lower), lambda t: breathing_curve(t, exponent)),
            ("hysteresis", hysteresis, hysteresis_curve),
        ]
        if params.lower_lobe_lag:
            lag = params.lower_lobe_lag
            self.terms.append(("lower lobes", breathing * lower, lambda t: lagged_curve(t, lag, exponent)))
        self.lesion = lesion
        if lesion is not None:
            si, loop = lesion_patterns(ct, lesion, params.lesion)
            lag = params.lesion.lag
            self.terms += [
                ("lesion", si, lambda t: lagged_curve(t, lag, exponent)),
                ("lesion loop", loop, lambda t: np.sin(np.pi * t) ** 2 * hysteresis_curve(t)),
            ]

    def field(self, t: float) -> sitk.Image:
        """The displacement field phase 0 -> phase t (vector float64, LPS mm, on the CT's grid)."""
        array = sum(curve(t) * pattern for _, pattern, curve in self.terms)
        field = sitk.GetImageFromArray(array, isVector=True)
        field.CopyInformation(self.reference)
        return field

    def description(self) -> dict:
        lesion = self.lesion.to_dict() if self.lesion is not None else None
        return {
            "params": asdict(self.params),
            "case": asdict(self.case),
            "terms": [name for name, _, _ in self.terms],
            "lesion": lesion,
        }

    def _lower_lobe_weight(self, s: np.ndarray) -> np.ndarray:
        """0 in the upper half of the lungs, rising smoothly to 1 over the lower third (per axial slice)."""
        height = max(self.case.lung_apex_s_mm - self.case.lung_base_s_mm, 10.0)
        depth = (self.case.lung_apex_s_mm - s) / height  # 0 at the apex, 1 at the base
        return _smoothstep((depth - 0.4) / 0.35)

    def _breathing_pattern(
        self, body: np.ndarray, lungs: np.ndarray, coords: tuple[np.ndarray, ...]
    ) -> np.ndarray:
        s = coords[2]  # LPS z (superior) of each axial slice
        case, params = self.case, self.params
        spacing = self.reference.GetSpacing()
        height = max(case.lung_apex_s_mm - case.lung_base_s_mm, 10.0)
        depth = np.clip((case.lung_apex_s_mm - s) / height, 0.0, None)  # 0 at the apex, 1 at the base
        ramp = _smoothstep(depth)
        below = np.clip(case.lung_base_s_mm - s, 0.0, None)
        si_profile = ramp * np.exp(-0.5 * (below / params.below_diaphragm_decay_mm) ** 2)
        if params.sliding:
            weight = _smooth(
                (_below_diaphragm(lungs, s, case) | lungs) & body, params.sliding_sigma_mm, spacing
            )
        else:
            weight = _smooth(body, 20.0, spacing)
        field = np.zeros(body.shape + (3,))
        field[..., 2] = -case.si_amplitude_mm * si_profile[:, None, None] * weight  # inhale: down (-S)
        field[..., :2] = self._expansion(body, coords, ramp, spacing)
        return field

    def _expansion(
        self, body: np.ndarray, coords: tuple[np.ndarray, ...], ramp: np.ndarray, spacing: tuple[float, ...]
    ) -> np.ndarray:
        """Anterior and lateral expansion: the back and the midline stay, the front and sides move out."""
        x, y, _ = coords
        zz, yy, xx = np.nonzero(body)
        front, back = y[yy.min()], y[yy.max()]
        left_mid = 0.5 * (x[xx.min()] + x[xx.max()])
        half_width = max(0.5 * (x[xx.max()] - x[xx.min()]), 10.0)
        to_front = np.clip((back - y) / max(back - front, 10.0), 0.0, 1.0)  # 0 at the back, 1 at the front
        sideways = np.clip((x - left_mid) / half_width, -1.0, 1.0)  # -1 right, +1 left
        weight = _smooth(body, 5.0, spacing) * ramp[:, None, None]
        out = np.empty(body.shape + (2,))
        out[..., 0] = self.case.lr_amplitude_mm * sideways[None, None, :] * weight  # +x is left
        out[..., 1] = -self.case.ap_amplitude_mm * to_front[None, :, None] * weight  # -y is anterior
        return out


def _below_diaphragm(lungs: np.ndarray, s: np.ndarray, case: CaseMotion) -> np.ndarray:
    """Everything under the lungs' lower surface, in the columns where that surface is the diaphragm.

    A column counts when its lowest lung voxel lies in the lower half of the lungs; so the trachea
    and the apices do not drag the mediastinum and spine below them along.
    """
    lowest = np.argmax(lungs, axis=0)  # array z runs inferior -> superior: the first lung voxel from below
    midway = 0.5 * (case.lung_apex_s_mm + case.lung_base_s_mm)
    basal = lungs.any(axis=0) & (s[lowest] < midway)
    return (np.arange(lungs.shape[0])[:, None, None] <= lowest[None]) & basal[None]


def _draw_case(
    params: MotionParams,
    seed: int,
    rng: np.random.Generator,
    lungs: np.ndarray,
    coords: tuple[np.ndarray, ...],
) -> CaseMotion:
    s_lung = coords[2][np.nonzero(lungs)[0]]
    return CaseMotion(
        seed=seed,
        si_amplitude_mm=float(rng.uniform(*params.si_amplitude_mm)),
        ap_amplitude_mm=float(rng.uniform(*params.ap_amplitude_mm)),
        lr_amplitude_mm=float(rng.uniform(*params.lr_amplitude_mm)),
        lung_apex_s_mm=float(np.percentile(s_lung, 98)),
        lung_base_s_mm=float(np.percentile(s_lung, 2)),
    )


def _random_field(
    ct: sitk.Image,
    rms_mm: float,
    params: MotionParams,
    rng: np.random.Generator,
    weight: np.ndarray,
    body: np.ndarray,
) -> np.ndarray:
    """A smooth random field (cubic B-spline on a coarse mesh), scaled to rms_mm inside the body."""
    if rms_mm <= 0:
        return np.zeros(body.shape + (3,))
    extent = [sz * sp for sz, sp in zip(ct.GetSize(), ct.GetSpacing())]
    mesh = [max(1, int(round(e / params.perturbation_spacing_mm))) for e in extent]
    transform = sitk.BSplineTransformInitializer(ct, mesh, order=3)
    transform.SetParameters(rng.normal(0.0, 1.0, transform.GetNumberOfParameters()).tolist())
    # Evaluated on a 4x coarser grid and interpolated: the field varies over tens of mm anyway.
    coarse_spacing = [4 * sp for sp in ct.GetSpacing()]
    coarse_size = [int(np.ceil(sz / 4)) + 1 for sz in ct.GetSize()]
    coarse = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, coarse_size, ct.GetOrigin(), coarse_spacing, ct.GetDirection()
    )
    field = sitk.Resample(coarse, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    array = sitk.GetArrayFromImage(field) * weight[..., None]
    rms = np.sqrt((array[body] ** 2).sum(axis=-1).mean())
    return array * (rms_mm / max(rms, 1e-9))


def jacobian_determinant(field: sitk.Image) -> np.ndarray:
    """det(I + du/dx) of an ITK displacement field image, at every voxel (array order z, y, x)."""
    return metrics.jacobian_determinant(
        sitk.GetArrayFromImage(field), index_to_physical_matrix(field)[:3, :3]
    )


def check_invertible(
    field: sitk.Image, what: str = "displacement field", minimum: float = 0.05, det: np.ndarray | None = None
) -> float:
    """Raise unless det J > minimum everywhere; returns the smallest determinant."""
    det = jacobian_determinant(field) if det is None else det
    smallest = float(det.min())
    if not np.isfinite(smallest) or smallest <= minimum:
        raise RuntimeError(f"{what} is not smoothly invertible: min det J = {smallest:.3f}")
    return smallest


def invert_field(
    field: sitk.Image, tolerance_mm: float = 0.02, iterations: int = 30
) -> tuple[sitk.Image, float]:
    """The inverse displacement field (ITK's fixed-point iteration) and its largest residual in mm.

    The residual is |u(x + v(x)) + v(x)| over the grid, checked here rather than trusted.
    """
    inverter = sitk.InvertDisplacementFieldImageFilter()
    inverter.SetMaximumNumberOfIterations(iterations)
    inverter.SetMeanErrorToleranceThreshold(1e-6)  # ITK stops when either tolerance is met: let max decide
    inverter.SetMaxErrorToleranceThreshold(tolerance_mm)
    inverter.SetEnforceBoundaryCondition(False)  # the abdomen keeps moving at the volume's lower edge
    inverse = inverter.Execute(sitk.Cast(field, sitk.sitkVectorFloat64))
    return inverse, inverse_residual(field, inverse)


def inverse_residual(field: sitk.Image, inverse: sitk.Image) -> float:
    """max |u(x + v(x)) + v(x)| in mm: how far T(T^-1(x)) lands from x."""
    u_at = sitk.TransformToDisplacementField(
        sitk.CompositeTransform(
            [
                sitk.DisplacementFieldTransform(sitk.Image(field)),
                sitk.DisplacementFieldTransform(sitk.Image(inverse)),
            ]
        ),
        sitk.sitkVectorFloat64,
        inverse.GetSize(),
        inverse.GetOrigin(),
        inverse.GetSpacing(),
        inverse.GetDirection(),
    )
    error = np.sqrt((sitk.GetArrayViewFromImage(u_at) ** 2).sum(axis=-1))
    # Near the grid's edges x + v(x) can leave the grid, where ITK takes u as zero: not an inversion error.
    margin = int(np.ceil(np.abs(sitk.GetArrayViewFromImage(inverse)).max() / min(inverse.GetSpacing()))) + 1
    inner = error[margin:-margin, margin:-margin, margin:-margin]
    return float(inner.max()) if inner.size else 0.0


def _physical_axes(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D LPS coordinates along x, y and z of an axis-aligned image."""
    return tuple(
        o + s * np.arange(n) for o, s, n in zip(image.GetOrigin(), image.GetSpacing(), image.GetSize())
    )


def _check_axis_aligned(image: sitk.Image) -> None:
    if not np.allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6):
        raise InputError(
            "the motion model needs an axis-aligned LPS grid (identity direction); "
            "resample the CT onto one first (simulate.working_ct does)"
        )


def _smooth(mask: np.ndarray, sigma_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Gaussian-smoothed 0/1 mask; 'nearest' keeps the weight flat at the volume's edges."""
    sigma = [sigma_mm / sp for sp in reversed(spacing)]  # array axes are (z, y, x)
    return ndimage.gaussian_filter(mask.astype(np.float64), sigma, mode="nearest")


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
