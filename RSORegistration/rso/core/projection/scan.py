"""What a pair's RTK geometry files say about the scan, and what the steps may do with it.

A phase image's geometry file gives the geometry of the projections it was reconstructed from and how it
was reconstructed (``phase_reconstruction``: FDK unless the file says TV). Two FDK phases can be
artefact-matched (``rso.core.projection.matching``). Two TV phases cannot (matching reconstructs by FDK
and would bring back the streaks TV took out), but their files still tell the scanners apart, and the
benchmark found that this decides native RSO (docs/decisions.md, "Native RSO on half-fan TV phases"):

* a half-fan (TrueBeam-like) scan: the box's similarity prefers wrong corrections as strongly as right
  ones, and no guard tried tells them apart, so native RSO declines box steps;
* a full-fan (XVI-like) scan: the steps help, and the second opinion declined only helpful ones, so it
  is off.

ISO's guard judges a fit on the matched pair against the images as given, which TV phases do not have; on
both scanners' TV phases its unguarded fit left the lungs further from the truth than the general model
(docs/decisions.md, "ISO on TV phases"), so the guarded ISO keeps the general model's answer there.
"""

from __future__ import annotations

from dataclasses import dataclass

from rso.core.projection.geometry import ProjectionGeometry, phase_reconstruction, read_geometry
from rso.errors import InputError

HALF_FAN_TV_DECLINE = (
    "the phases are TV reconstructions of a half-fan scan, where box steps made boxes worse as often "
    "as better in the benchmark (docs/results.md): the box is left as it is"
)

TV_ISO_DECLINE = (
    "the phases are TV reconstructions, on which ISO's fit left the lungs further from the truth than the "
    'general model (docs/decisions.md, "ISO on TV phases"): the field stays'
)

# Added to a declined box step's reason on FDK phases of a half-fan scan: their streaks hide the motion in
# most boxes, even from the true correction (docs/results.md, "Why the TrueBeam-like boxes are declined"),
# and TV phases of the same scan leave those boxes no nearer the truth (docs/decisions.md, "A declined step
# on half-fan FDK phases": so the clause explains the decline rather than sending the user to them).
HALF_FAN_FDK_NOTE = (
    "; on a half-fan scan the streaks hide the motion in most boxes, whether the phases are FDK or TV "
    "reconstructions: the box keeps the field it had"
)


@dataclass(frozen=True)
class PhaseScan:
    """One phase image's acquisition: its projections' geometry and how the image was reconstructed."""

    geometry: ProjectionGeometry
    reconstruction: str = "fdk"  # one of rso.core.projection.geometry.RECONSTRUCTIONS

    @classmethod
    def read(cls, path) -> PhaseScan:
        """The phase's RTK geometry file; InputError with one line where it cannot be used."""
        return cls(read_geometry(path), phase_reconstruction(path))


@dataclass(frozen=True)
class ScanPair:
    """The fixed and moving phases' scans: whether matching can run, and the native-RSO rule they set."""

    fixed: PhaseScan
    moving: PhaseScan

    @classmethod
    def of(cls, fixed, moving) -> ScanPair | None:
        """Both images' scans (``PhaseScan``, or a ``ProjectionGeometry`` for an FDK phase), or None for
        neither; InputError where only one is given or the two cannot be compared."""
        if (fixed is None) != (moving is None):
            raise InputError("projection geometry: give the geometry of both images, or of neither")
        if fixed is None:
            return None
        pair = cls(*(s if isinstance(s, PhaseScan) else PhaseScan(s) for s in (fixed, moving)))
        pair._check()
        return pair

    def _check(self) -> None:
        fixed, moving = self.fixed, self.moving
        if fixed.geometry.is_parallel != moving.geometry.is_parallel:
            raise InputError("projection geometry: one image's is a parallel beam, the other's a cone beam")
        if fixed.reconstruction != moving.reconstruction:
            raise InputError(
                f"projection geometry: the fixed phase was reconstructed by {fixed.reconstruction.upper()} "
                f"and the moving one by {moving.reconstruction.upper()}: give two phases reconstructed alike"
            )

    @property
    def reconstruction(self) -> str:
        return self.fixed.reconstruction

    @property
    def is_half_fan(self) -> bool:
        return self.fixed.geometry.is_half_fan or self.moving.geometry.is_half_fan

    @property
    def geometries(self) -> tuple[ProjectionGeometry, ProjectionGeometry]:
        return self.fixed.geometry, self.moving.geometry

    @property
    def matchable(self) -> bool:
        """Whether artefact matching can run: both phases are FDK reconstructions."""
        return self.reconstruction == "fdk"

    def native_rso_decline(self) -> str | None:
        """Why native RSO declines every box on this pair (None: it may refine)."""
        return HALF_FAN_TV_DECLINE if self.reconstruction == "tv" and self.is_half_fan else None

    def iso_decline(self) -> str | None:
        """Why the guarded ISO keeps the start's field on this pair (None: it may fit)."""
        return TV_ISO_DECLINE if self.reconstruction == "tv" else None

    def decline_note(self) -> str:
        """What a declined box step's reason adds on this pair: on FDK phases of a half fan, why."""
        return HALF_FAN_FDK_NOTE if self.reconstruction == "fdk" and self.is_half_fan else ""

    def wants_second_opinion(self) -> bool:
        """Whether a kept step on the images as given gets the second opinion: not on full-fan TV phases."""
        return not (self.reconstruction == "tv" and not self.is_half_fan)

    def status(self) -> str:
        """What the scan means for the steps, where matching cannot run (the status line's tail)."""
        fan = "half" if self.is_half_fan else "full"
        rule = "native RSO declines box steps" if self.native_rso_decline() else "no second opinion"
        return f"the phases are TV reconstructions of a {fan}-fan scan (ISO keeps the field; {rule})"

    def to_dict(self) -> dict:
        """The session manifest's record: each phase's geometry and reconstruction."""
        return {
            "geometry": [s.geometry.to_dict() for s in (self.fixed, self.moving)],
            "reconstruction": self.reconstruction,
        }

    @classmethod
    def from_manifest(cls, geometry: list | None, reconstruction: str | None) -> ScanPair | None:
        """A saved session's scans (a manifest from before TV phases kept their scans says FDK)."""
        if not geometry:
            return None
        kind = reconstruction or "fdk"
        return cls.of(*(PhaseScan(ProjectionGeometry.from_dict(g), kind) for g in geometry))
