"""RTK's forward projection, FDK and total-variation reconstruction of volumes already in RTK's frame.

Volumes come in as SimpleITK images on an axis-aligned RTK-frame grid (``Placement.to_rtk``), mu in
1/mm; projections are numpy arrays (P, V, U) of line integrals (mu x mm, dimensionless), the layout of
an RTK projection stack (P projections of V rows of U pixels). RTK is imported lazily.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rso.core.projection.geometry import PANEL_MM, RECONSTRUCTIONS, ProjectionGeometry, rtk_module
from rso.core.projection.units import MU_WATER_PER_MM
from rso.errors import InputError

log = logging.getLogger(__name__)

# The ramp filter's Hann cut-off (0: the bare ramp, rtkfdk's default). One recipe for the simulator, the
# scanner import and artefact matching: matching must reconstruct as the phase images were.
FDK_HANN_CUT = 0.0


@dataclass(frozen=True)
class TVRecipe:
    """RTK's ADMM total-variation reconstruction (``rtkadmmtotalvariation``), images in units of water's mu.

    Chosen on the cone-beam training cases (docs/decisions.md): a weaker or a much stronger TV weight
    leaves the lungs further from the CT; more iterations still lower the streaks, at ~3 s each at the
    2.5 mm working grid on 2 cores.
    """

    alpha: float = 100.0  # the TV term's weight
    beta: float = 1000.0  # ADMM's augmented-Lagrangian weight
    iterations: int = 20  # ADMM (augmented-Lagrangian) iterations
    cg_iterations: int = 4  # conjugate-gradient iterations in each


@dataclass(frozen=True)
class Detector:
    """The projection stack's pixels: RTK's projection-image origin and spacing, in mm at the detector.

    ``origin_mm`` is the (u, v) coordinate of the first pixel in RTK's projection coordinates, before
    the geometry's projection offsets move the detector (RTK's convention: the central ray meets the
    detector at u = -projection_offset_x).
    """

    size_px: tuple[int, int]  # (u, v)
    spacing_mm: tuple[float, float]
    origin_mm: tuple[float, float]

    def __post_init__(self):
        if min(self.size_px) < 1 or min(self.spacing_mm) <= 0:
            raise InputError(f"detector: size {self.size_px} px and spacing {self.spacing_mm} mm must be > 0")

    @classmethod
    def centred(cls, size_px, spacing_mm) -> Detector:
        """A detector of ``size_px`` (u, v) pixels of ``spacing_mm`` (u, v), centred on projection (0, 0)."""
        size = (int(size_px[0]), int(size_px[1]))
        spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
        origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(size, spacing))
        return cls(size, spacing, origin)

    @classmethod
    def covering(cls, volume_rtk: sitk.Image, geometry: ProjectionGeometry, panel_mm=PANEL_MM) -> Detector:
        """The panel (``panel_mm`` (u, v) at the detector), centred, with pixels matched to the voxels.

        Pixel = the volume's voxel spacing times the magnification SDD/SID (1 for a parallel beam): the
        transverse RTK axes (x, z) give u, the rotation axis (y) gives v. The geometry's projection
        offsets then shift the panel, as RTK does.
        """
        spacing_x, spacing_y, spacing_z = volume_rtk.GetSpacing()
        pixel = np.array([min(spacing_x, spacing_z), spacing_y]) * geometry.magnification
        size = np.maximum(2, np.round(np.asarray(panel_mm, dtype=float) / pixel)).astype(int)
        return cls.centred(tuple(size), tuple(pixel))

    @property
    def shape(self) -> tuple[int, int]:
        """(V, U): one projection's array shape."""
        return self.size_px[1], self.size_px[0]


def _image_type():
    import itk

    return itk.Image[itk.F, 3]


def _volume_to_itk(volume: sitk.Image):
    """A float32 ITK image with the SimpleITK image's array (z, y, x), origin, spacing and direction."""
    import itk

    image = itk.GetImageFromArray(np.ascontiguousarray(sitk.GetArrayFromImage(volume), dtype=np.float32))
    image.SetOrigin(volume.GetOrigin())
    image.SetSpacing(volume.GetSpacing())
    image.SetDirection(itk.matrix_from_array(np.asarray(volume.GetDirection()).reshape(3, 3)))
    return image


def _constant(image_type, size, spacing, origin):
    """RTK's ConstantImageSource of zeros (a fresh one per call: FDK accumulates into its input)."""
    source = rtk_module().ConstantImageSource[image_type].New()
    source.SetSize([int(n) for n in size])
    source.SetSpacing([float(s) for s in spacing])
    source.SetOrigin([float(o) for o in origin])
    source.SetConstant(0.0)
    return source


def _check_rtk_frame(volume: sitk.Image, what: str):
    if volume.GetDimension() != 3 or not np.allclose(volume.GetDirection(), np.eye(3).ravel(), atol=1e-6):
        raise InputError(
            f"{what}: expected a 3-D volume on an axis-aligned RTK-frame grid (Placement.to_rtk)"
        )


def forward_project(mu_rtk: sitk.Image, geometry: ProjectionGeometry, detector: Detector) -> np.ndarray:
    """Line integrals of mu through the volume, RTK's Joseph projector.

    mu_rtk: attenuation (1/mm) on an RTK-frame grid. Returns float32 (P, V, U) = (geometry.count,
    detector.size_px[1], detector.size_px[0]), dimensionless (mu x mm).
    """
    import itk

    _check_rtk_frame(mu_rtk, "forward projection")
    image_type = _image_type()
    (size_u, size_v), (spacing_u, spacing_v) = detector.size_px, detector.spacing_mm
    stack = _constant(
        image_type, (size_u, size_v, geometry.count), (spacing_u, spacing_v, 1.0), (*detector.origin_mm, 0.0)
    )
    projector = rtk_module().JosephForwardProjectionImageFilter[image_type, image_type].New()
    projector.SetInput(0, stack.GetOutput())
    projector.SetInput(1, _volume_to_itk(mu_rtk))
    rtk_geometry = geometry.to_rtk()  # kept alive until the projector has run
    projector.SetGeometry(rtk_geometry)
    projector.Update()
    return np.array(itk.GetArrayFromImage(projector.GetOutput()), dtype=np.float32)


def _projections_to_itk(line_integrals: np.ndarray, detector: Detector):
    import itk

    stack = itk.GetImageFromArray(np.ascontiguousarray(line_integrals, dtype=np.float32))
    stack.SetOrigin((*detector.origin_mm, 0.0))
    stack.SetSpacing((*detector.spacing_mm, 1.0))
    return stack


def _redundancy_weighted(stack, geometry: ProjectionGeometry, rtk_geometry, enabled: bool):
    """rtkfdk's chain before FDK: displaced-detector weighting, then Parker's short-scan weighting.

    Each is a no-op where it does not apply (RTK checks the detector's position itself; Parker runs
    only for a short scan, with its gap threshold just below the scan's largest gap so that RTK agrees
    with ``ProjectionGeometry.is_short_scan``). Returns the filters in order, the last one feeding FDK:
    the caller keeps them all alive, since an ITK image holds only a weak reference to its source.
    """
    rtk = rtk_module()
    image_type = _image_type()
    displaced = rtk.DisplacedDetectorImageFilter[image_type].New()
    displaced.SetInput(stack)
    displaced.SetGeometry(rtk_geometry)
    displaced.SetDisable(not enabled)
    if not (enabled and geometry.is_short_scan) or geometry.is_parallel:
        return [displaced]
    parker = rtk.ParkerShortScanImageFilter[image_type].New()
    parker.SetInput(displaced.GetOutput())
    parker.SetGeometry(rtk_geometry)
    parker.InPlaceOff()
    parker.SetAngularGapThreshold(math.radians(0.99 * float(geometry.angular_gaps_deg().max())))
    return [displaced, parker]


def fdk(
    line_integrals: np.ndarray,
    geometry: ProjectionGeometry,
    detector: Detector,
    like_rtk: sitk.Image,
    hann_cut: float = 0.0,
    *,
    redundancy_weighting: bool = True,
) -> sitk.Image:
    """FDK reconstruction (RTK) of mu (1/mm) on ``like_rtk``'s grid, float32.

    line_integrals: (P, V, U) as ``forward_project`` returns them. hann_cut: the ramp filter's Hann
    window cut-off in ]0, 1] of Nyquist (0: the bare ramp, rtkfdk's default). Displaced-detector
    (half-fan) and Parker (short-scan) weighting are applied as rtkfdk applies them;
    ``redundancy_weighting=False`` leaves both out (only to show what they do). A parallel geometry
    (SDD = 0) is reconstructed as RTK does, by parallel-beam FBP through the same filter.
    """
    import itk

    _check_rtk_frame(like_rtk, "FDK")
    expected = (geometry.count, *detector.shape)
    if np.shape(line_integrals) != expected:
        raise InputError(
            f"FDK: projections of shape {np.shape(line_integrals)}, expected (P, V, U) = {expected}"
        )
    if not 0.0 <= hann_cut <= 1.0:
        raise InputError(f"FDK: the Hann cut-off must be in [0, 1], not {hann_cut}")
    rtk = rtk_module()
    image_type = _image_type()
    rtk_geometry = geometry.to_rtk()
    stack = _projections_to_itk(line_integrals, detector)
    weighting = _redundancy_weighted(stack, geometry, rtk_geometry, redundancy_weighting)
    volume = _constant(image_type, like_rtk.GetSize(), like_rtk.GetSpacing(), like_rtk.GetOrigin())
    feldkamp = rtk.FDKConeBeamReconstructionFilter[image_type].New()
    feldkamp.SetInput(0, volume.GetOutput())
    feldkamp.SetInput(1, weighting[-1].GetOutput())
    feldkamp.SetGeometry(rtk_geometry)
    feldkamp.GetRampFilter().SetHannCutFrequency(float(hann_cut))
    # Split across threads, RTK's FDK backprojection differs run to run in the last bit, and a
    # registration on matched images then differs too (docs/decisions.md). One thread costs ~0.4 s an
    # FDK at the 2 mm matching grid on 2 cores.
    feldkamp.GetBackProjectionFilter().SetNumberOfWorkUnits(1)
    feldkamp.Update()
    result = sitk.GetImageFromArray(np.array(itk.GetArrayFromImage(feldkamp.GetOutput()), dtype=np.float32))
    result.CopyInformation(like_rtk)
    log.debug("FDK of %d views onto %s voxels (%s)", geometry.count, like_rtk.GetSize(), geometry.summary())
    return result


def field_of_view(volume_rtk: sitk.Image, geometry: ProjectionGeometry, detector: Detector) -> np.ndarray:
    """(Z, Y, X) bool on ``volume_rtk``'s grid: the voxels that every projection, or the projection
    opposite it, sees on the panel (``geometry``: a circular scan's projections with their opposites,
    e.g. ``ProjectionGeometry.circular`` at angles a and a + 180).

    Outside it FDK has no complete data (a truncated field of view); a half fan sees each voxel in
    about half of the projections, and the opposite ones complete it. Voxel centres are projected with
    RTK's 3 x 4 projection matrices (which include the projection offsets) onto the panel's extent.
    """
    import itk

    _check_rtk_frame(volume_rtk, "field of view")
    rtk_geometry = geometry.to_rtk()
    size, spacing, origin = volume_rtk.GetSize(), volume_rtk.GetSpacing(), volume_rtk.GetOrigin()
    axes = [origin[a] + spacing[a] * np.arange(size[a], dtype=np.float32) for a in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")  # array order (z, y, x)
    points = np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size, np.float32)])  # (4, N) homogeneous
    low = np.asarray(detector.origin_mm)
    high = low + (np.asarray(detector.size_px) - 1) * np.asarray(detector.spacing_mm)
    angles = np.asarray(geometry.gantry_deg)
    complete = np.ones(x.size, dtype=bool)
    for index in range(geometry.count):
        opposite = int(np.argmin(np.abs((angles - angles[index] - 180.0 + 180.0) % 360.0 - 180.0)))
        seen = np.zeros(x.size, dtype=bool)
        for view in (index, opposite):
            projected = itk.array_from_matrix(rtk_geometry.GetMatrix(view)).astype(np.float32) @ points
            u, v = projected[0] / projected[2], projected[1] / projected[2]
            seen |= (u >= low[0]) & (u <= high[0]) & (v >= low[1]) & (v <= high[1])
        complete &= seen
    return complete.reshape(x.shape)


# The file a scan's field of view is written to beside its phases (``phases``, ``simulate``).
FOV_MASK = "fov_mask.nii.gz"


def scan_field_of_view(
    like: sitk.Image, placement, geometry: ProjectionGeometry, detector: Detector
) -> sitk.Image:
    """(uint8 on ``like``'s LPS grid, 1 inside) the scan's field of view: ``field_of_view`` of a full turn
    (every 10 degrees) with the scan's first projection's distances and panel offset, the scan placed by
    ``placement`` (``Placement``).

    Beyond it, along the rotation axis above all, FDK leaves a dark, streaked image that carries no
    anatomy (docs/decisions.md, "A slower half-fan protocol": ISO fitted it on half-fan scans; as the fit
    mask it stopped those fits and let harmful ones through on full-fan scans).
    """
    grid = placement.rtk_grid(like)
    probe = ProjectionGeometry.circular(
        geometry.source_to_isocenter_mm[0],
        geometry.source_to_detector_mm[0],
        np.arange(0.0, 360.0, 10.0),
        geometry.projection_offset_x_mm[0],
    )
    mask = sitk.GetImageFromArray(field_of_view(grid, probe, detector).astype(np.float32))
    mask.CopyInformation(grid)
    return sitk.Cast(placement.from_rtk(mask, like) > 0.5, sitk.sitkUInt8)


def tv_reconstruct(
    line_integrals: np.ndarray,
    geometry: ProjectionGeometry,
    detector: Detector,
    like_rtk: sitk.Image,
    recipe: TVRecipe = TVRecipe(),
) -> sitk.Image:
    """Total-variation regularised reconstruction (RTK's ADMM) of mu (1/mm) on ``like_rtk``'s grid, float32.

    line_integrals: (P, V, U) as ``forward_project`` returns them. It starts from the FDK image and fits
    the projections by least squares with a total-variation penalty: a sparse, clustered phase's streaks
    do not fit its own projections, so they fade where FDK keeps them. Cone-beam geometries only;
    displaced-detector (half-fan) weighting is applied as ``rtkadmmtotalvariation`` applies it.
    """
    import itk

    if geometry.is_parallel:
        raise InputError("total-variation reconstruction needs a cone-beam geometry (SDD > 0)")
    scale = 1.0 / MU_WATER_PER_MM  # the recipe's weights are for images of order 1
    start = _scaled(_volume_to_itk(fdk(line_integrals, geometry, detector, like_rtk)), scale)
    stack = _scaled(_projections_to_itk(line_integrals, detector), scale)
    rtk = rtk_module()
    admm = rtk.ADMMTotalVariationConeBeamReconstructionFilter[_image_type()].New()
    admm.SetInput(0, start.GetOutput())
    admm.SetInput(1, stack.GetOutput())
    rtk_geometry = geometry.to_rtk()  # kept alive until the filter has run
    admm.SetGeometry(rtk_geometry)
    admm.SetForwardProjectionFilter(admm.ForwardProjectionType_FP_JOSEPH)
    admm.SetBackProjectionFilter(admm.BackProjectionType_BP_VOXELBASED)
    admm.SetAlpha(recipe.alpha)
    admm.SetBeta(recipe.beta)
    admm.SetAL_iterations(recipe.iterations)
    admm.SetCG_iterations(recipe.cg_iterations)
    admm.Update()
    mu = np.array(itk.GetArrayFromImage(admm.GetOutput()), dtype=np.float32) / scale
    result = sitk.GetImageFromArray(mu)
    result.CopyInformation(like_rtk)
    log.debug("TV reconstruction of %d views onto %s voxels (%s)", geometry.count, like_rtk.GetSize(), recipe)
    return result


def _scaled(image, factor: float):
    """A filter whose output is ``image`` x ``factor``, not in place.

    ADMM's in-place filters take over their input's buffer. An image made from an array cannot be made
    again, so it would be left empty for the next iteration (RTK then fails with a region outside an
    empty buffer, as seen on a full fan); a filter's output is simply recomputed.
    """
    import itk

    image_type = _image_type()
    multiply = itk.MultiplyImageFilter[image_type, image_type, image_type].New()
    multiply.SetInput(image)
    multiply.SetConstant(float(factor))
    multiply.InPlaceOff()
    return multiply


def reconstruct(
    kind: str,
    line_integrals: np.ndarray,
    geometry: ProjectionGeometry,
    detector: Detector,
    like_rtk: sitk.Image,
    hann_cut: float = FDK_HANN_CUT,
) -> sitk.Image:
    """mu (1/mm) on ``like_rtk``'s grid by one of ``RECONSTRUCTIONS`` (``hann_cut``: FDK's alone)."""
    if kind not in RECONSTRUCTIONS:
        raise InputError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, not {kind!r}")
    if kind == "tv":
        return tv_reconstruct(line_integrals, geometry, detector, like_rtk)
    return fdk(line_integrals, geometry, detector, like_rtk, hann_cut)
