"""The settings of a registration, one dataclass per step, each setting declared once (no torch).

Every default comes from ``rso.options``. The CLI options (``rso.cli.common.add_settings``), the
worker protocol's argument tables (``rso.service.protocol.COMMANDS``) and the Slicer parameter
node's fields (``RSORegistrationLib.parameters``) are generated from ``dataclasses.fields`` of
these classes; a test checks that they agree. A field's metadata holds its command-line flag and
help; its protocol key is its name.

* ``EngineSettings``: which network, where, in which arithmetic, with which loss and seed;
* ``PairInputs``: the files of one image pair (paths on the machine that reads them);
* ``ISOSettings``: image-specific optimisation of the whole pair;
* ``RSOSettings``: region-specific optimisation of a box (native mode or a network mode).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from rso.errors import InputError
from rso.options import (
    ALLOW_NON_CT,
    COMPOSITIONS,
    DEFAULT_BLEND_MARGIN_MM,
    DEFAULT_COMPOSITION,
    DEFAULT_DEVICE,
    DEFAULT_ISO_END_FADE_MM,
    DEFAULT_ISO_GUARD,
    DEFAULT_ISO_ITERATIONS,
    DEFAULT_ISO_MATCH_ARTEFACTS,
    DEFAULT_NATIVE_ITERATIONS,
    DEFAULT_PREALIGN,
    DEFAULT_PRECISION,
    DEFAULT_RSO_CONTROL_SPACING_MM,
    DEFAULT_RSO_MATCH_ARTEFACTS,
    DEFAULT_RSO_MAX_ADDED_FOLD_SHARE,
    DEFAULT_RSO_MAX_DISAGREEMENT_MM,
    DEFAULT_RSO_MAX_OUTSIDE_SHARE,
    DEFAULT_RSO_MIN_AXIS_SHARE,
    DEFAULT_RSO_MIN_END_DISTANCE_MM,
    DEFAULT_RSO_MIN_GAIN,
    DEFAULT_RSO_MIN_MOTION_LEFT,
    DEFAULT_RSO_MIN_UNFITTED_GAIN,
    DEFAULT_RSO_MODE,
    DEFAULT_RSO_PRESMOOTH_MM,
    DEFAULT_RSO_RETURNS,
    DEFAULT_RSO_SCAN_RULE,
    DEFAULT_RSO_SIMILARITY,
    DEFAULT_RSO_SMOOTHNESS,
    DEFAULT_RSO_STEP_MM,
    DEFAULT_SEED,
    DEFAULT_SIMILARITY,
    DEFAULT_SMOOTHNESS,
    DEVICES,
    NATIVE_SIMILARITIES,
    PAPER_LEARNING_RATE,
    PAPER_RSO_ITERATIONS,
    PREALIGNMENTS,
    PRECISIONS,
    RSO_MODES,
    SIMILARITIES,
)

FIELD_MODES = ("native", "direct")  # RSO modes that change only the field in the box (the network stays)

# A field's kind, from its annotation: how the CLI parses it and what the protocol accepts.
KINDS = {
    "int": "int",
    "int | None": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "str | None": "str",
    "tuple[int, ...] | None": "ints",
    "tuple[int, int, int] | None": "ints3",
}


def setting(default, help: str, *, flag: str | None = None, metavar: str | None = None, choices=None):
    """A dataclass field with its CLI flag (default: ``--`` + the name with dashes), help and choices."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "choices": choices}
    return field(default=default, metadata=metadata)


def default_of(settings: type, name: str):
    """A field's default as its dataclass resolves it (RSOSettings' iterations: the default mode's)."""
    return getattr(settings(), name)


def choices_of(settings: type, name: str) -> tuple[str, ...] | None:
    return next(f for f in fields(settings) if f.name == name).metadata["choices"]


def kind_of(f) -> str:
    """``int``, ``float``, ``bool``, ``str``, ``ints`` (a list) or ``ints3`` (three), from the annotation."""
    return KINDS[str(f.type)]


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


class Settings:
    """What every settings dataclass shares: a JSON round trip (the protocol passes settings whole)."""

    def to_dict(self) -> dict:
        return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict):
        """The settings a dict names (missing or null: the default); an unknown name is an InputError."""
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}")
        given = {name: value for name, value in data.items() if value is not None}
        for name, value in given.items():
            if kind_of(names[name]).startswith("ints"):
                given[name] = tuple(value)
        return cls(**given)


def _check_choice(owner: Settings, name: str) -> None:
    choices = next(f for f in fields(owner) if f.name == name).metadata["choices"]
    value = getattr(owner, name)
    if value is not None and value not in choices:
        raise InputError(f"{name.replace('_', ' ')} must be one of {', '.join(choices)}, not {value!r}")


def _check_signs(owner: Settings, at_least_zero=(), positive=()) -> None:
    for name in at_least_zero:
        if getattr(owner, name) < 0:
            raise InputError(f"{name.replace('_', ' ')} must be >= 0")
    for name in positive:
        if getattr(owner, name) <= 0:
            raise InputError(f"{name.replace('_', ' ')} must be > 0")


def check_iterations(iterations) -> None:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise InputError(f"iterations must be a whole number >= 0, not {iterations!r}")


@dataclass(frozen=True)
class EngineSettings(Settings):
    """Which network, on which grid, on which device, in which arithmetic, with which loss and seed."""

    model: str | None = setting(None, "general model checkpoint (default: the bundled one)", metavar="CKPT")
    channels: tuple[int, ...] | None = setting(
        None, "channels of an untrained network when no model is used (e.g. 8,16,32,64,128)"
    )
    grid: tuple[int, int, int] | None = setting(None, "model grid (multiples of 16)", metavar="Z,Y,X")
    device: str = setting(DEFAULT_DEVICE, "where the network runs", choices=DEVICES)
    precision: str = setting(
        DEFAULT_PRECISION,
        "network arithmetic: auto picks bf16 where the hardware has it natively, 2-3x faster than fp32 "
        "at the same accuracy; a step that diverges in bf16 is repeated in fp32",
        choices=PRECISIONS,
    )
    seed: int = setting(DEFAULT_SEED, "seed of every random choice (an untrained network's weights too)")
    network_similarity: str = setting(
        DEFAULT_SIMILARITY,
        "the network steps' similarity (ISO, and RSO in the network modes)",
        flag="--similarity",
        choices=SIMILARITIES,
    )
    network_smoothness: float = setting(
        DEFAULT_SMOOTHNESS, "the network steps' smoothness weight", flag="--smoothness", metavar="W"
    )
    allow_non_ct: bool = setting(
        ALLOW_NON_CT,
        "register images that do not look like CT in Hounsfield units (the model expects HU): their "
        "network input is normalised from their own 0.5th-99.5th percentiles",
    )

    def __post_init__(self):
        if self.model and self.channels:
            raise InputError(
                "channels describe an untrained network; they cannot be combined with a model checkpoint"
            )
        for name in ("device", "precision", "network_similarity"):
            _check_choice(self, name)
        _check_signs(self, at_least_zero=("network_smoothness",))


@dataclass(frozen=True)
class PairInputs(Settings):
    """The files of one registration (read and checked by ``rso.core.inputs.read_inputs``: the
    session's images)."""

    fixed: str | None = setting(None, "fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    moving: str | None = setting(None, "moving image")
    truth: str | None = setting(None, "ground-truth displacement field (ITK, fixed -> moving) for TRE")
    reference: str | None = setting(None, "image to measure RMSE against (default: the fixed image)")
    metrics_mask: str | None = setting(None, "a binary image: where the metrics are measured")
    fit_mask: str | None = setting(None, "a binary image: ISO and native RSO compare the images inside it")
    fixed_geometry: str | None = setting(None, "the fixed image's RTK projection geometry (XML)")
    moving_geometry: str | None = setting(None, "the moving image's RTK projection geometry (XML)")
    placement: str | None = setting(None, "an ITK affine transform file: RTK frame -> the images' LPS")
    fixed_series: str | None = setting(None, "which series of a DICOM folder holding several (UID or index)")
    moving_series: str | None = setting(None, "the same for the moving image's folder")
    initial_transform: str | None = setting(None, "an ITK transform (fixed -> moving points) to start from")
    prealign: str | None = setting(DEFAULT_PREALIGN, "compute the initial transform", choices=PREALIGNMENTS)

    FILES = (
        "fixed",
        "moving",
        "truth",
        "reference",
        "metrics_mask",
        "fit_mask",
        "fixed_geometry",
        "moving_geometry",
        "placement",
        "initial_transform",
    )

    def __post_init__(self):
        _check_choice(self, "prealign")
        if self.prealign is not None and self.initial_transform:
            raise InputError("give an initial transform or a pre-alignment (--prealign), not both")


@dataclass(frozen=True)
class ISOSettings(Settings):
    """Image-specific optimisation: the network fine-tuned on the whole pair (paper eq. 3)."""

    iterations: int = setting(DEFAULT_ISO_ITERATIONS, "ISO iterations (0: none)", flag="--iso", metavar="N")
    learning_rate: float = setting(
        PAPER_LEARNING_RATE, "ISO's Adam learning rate", flag="--iso-learning-rate"
    )
    match_artefacts: bool = setting(
        DEFAULT_ISO_MATCH_ARTEFACTS,
        "fit artefact-matched images where both images' projection geometries are given",
        flag="--iso-match-artefacts",
    )
    guard: bool = setting(
        DEFAULT_ISO_GUARD,
        "on artefact-matched images, keep ISO's field only where the images as given agree clearly better "
        "under it than under the field it started from; without projection geometry, only where its change "
        "in the lungs lies mostly along the body's superior-inferior axis; on TV phases, never",
        flag="--iso-guard",
    )
    end_fade_mm: float = setting(
        DEFAULT_ISO_END_FADE_MM,
        "ISO's change fades to nothing over this distance (mm) from the images' superior and inferior "
        "ends, where the field it started from carries each voxel: tissue carried across an end has no "
        "counterpart (0: no fade)",
        flag="--iso-end-fade",
        metavar="MM",
    )

    def __post_init__(self):
        check_iterations(self.iterations)
        _check_signs(self, at_least_zero=("end_fade_mm",), positive=("learning_rate",))


@dataclass
class RSOSettings(Settings):
    """How an RSO step runs: which mode, how long, how its field is merged, and the native mode's knobs."""

    iterations: int | None = setting(
        None,
        f"RSO iterations per box (default: {DEFAULT_NATIVE_ITERATIONS} in the native mode, the paper's "
        f"{PAPER_RSO_ITERATIONS} in the network modes)",
        flag="--rso",
        metavar="N",
    )
    mode: str = setting(
        DEFAULT_RSO_MODE,
        "native: a smooth correction at the fixed image's resolution in the box; direct: the model-grid "
        "field in the box; crop: the network fine-tuned on a sub-volume around the box; full: on the whole "
        "image (the paper). native and direct need --compose local",
        flag="--rso-mode",
        choices=RSO_MODES,
    )
    compose: str = setting(
        DEFAULT_COMPOSITION,
        "global: the fine-tuned field everywhere (the paper); local: the box only, blended",
        choices=COMPOSITIONS,
    )
    blend_margin_mm: float = setting(
        DEFAULT_BLEND_MARGIN_MM, "local blend margin (mm)", flag="--blend-margin", metavar="MM"
    )
    learning_rate: float = setting(
        PAPER_LEARNING_RATE, "network modes: Adam's learning rate", flag="--rso-learning-rate"
    )
    similarity: str = setting(
        DEFAULT_RSO_SIMILARITY,
        "native: what is compared in the box: MIND-SSC descriptors, local NCC, or squared differences",
        flag="--rso-similarity",
        choices=NATIVE_SIMILARITIES,
    )
    control_spacing_mm: float = setting(
        DEFAULT_RSO_CONTROL_SPACING_MM,
        "native: the correction's control-point spacing",
        flag="--rso-control-spacing",
        metavar="MM",
    )
    smoothness: float = setting(
        DEFAULT_RSO_SMOOTHNESS,
        "native: diffusion weight on the correction (not on the field)",
        flag="--rso-smoothness",
        metavar="W",
    )
    step_mm: float = setting(
        DEFAULT_RSO_STEP_MM, "native: Adam's step on the correction", flag="--rso-step", metavar="MM"
    )
    min_gain: float = setting(
        DEFAULT_RSO_MIN_GAIN,
        "native: the guard; decline a step that explains less than this fraction of the box's remaining "
        "difference (0: no gain is needed)",
        flag="--rso-min-gain",
        metavar="F",
    )
    min_unfitted_gain: float = setting(
        DEFAULT_RSO_MIN_UNFITTED_GAIN,
        "the guard on the pair a step did not fit, where both geometries are given: the images as given "
        "after a step on artefact-matched ones (native, or a network mode's local step), else the matched "
        "ones; decline a step that explains less than this fraction of their difference in the box",
        flag="--rso-min-unfitted-gain",
        metavar="F",
    )
    min_axis_share: float = setting(
        DEFAULT_RSO_MIN_AXIS_SHARE,
        "native, where the projection geometry is known: decline a correction with less than this share of "
        "its length along the scanner's rotation axis, across which a circular scan's streaks lie (0: any "
        "direction)",
        flag="--rso-min-axis-share",
        metavar="F",
    )
    min_motion_left: float = setting(
        DEFAULT_RSO_MIN_MOTION_LEFT,
        "native: decline a step (a correction or a return to an earlier state) that leaves less than this "
        "share of the box's RMS motion, landing near no motion, which artefacts fixed in the scanner favour "
        "(0: any step)",
        flag="--rso-min-motion-left",
        metavar="F",
    )
    max_added_fold_share: float = setting(
        DEFAULT_RSO_MAX_ADDED_FOLD_SHARE,
        "native: decline a step that adds more folded voxels (det J <= 0) in box + margin than this share of "
        "those the field already has there (0: none; where it has none, none whatever the share)",
        flag="--rso-max-added-folds",
        metavar="F",
    )
    max_outside_share: float = setting(
        DEFAULT_RSO_MAX_OUTSIDE_SHARE,
        "native: decline a step where the current or the corrected field sends more than this share of the "
        "box outside the moving image, which does not show where that part moved (1: never)",
        flag="--rso-max-outside-share",
        metavar="F",
    )
    min_end_distance_mm: float = setting(
        DEFAULT_RSO_MIN_END_DISTANCE_MM,
        "native, where the projection geometry is known: decline a box step where the box comes closer than "
        "this to the fixed image's end along the scanner's rotation axis, where a cone-beam reconstruction "
        "is least reliable and its artefacts, fixed in the scanner, favour no motion (0: anywhere)",
        flag="--rso-min-end-distance",
        metavar="MM",
    )
    max_disagreement_mm: float = setting(
        DEFAULT_RSO_MAX_DISAGREEMENT_MM,
        "native: the second opinion, where the step compares the images as given; decline a correction "
        "whose mean in the box differs by more than this from the one local NCC finds (0: no second "
        "opinion)",
        flag="--rso-max-disagreement",
        metavar="MM",
    )
    presmooth_mm: float = setting(
        DEFAULT_RSO_PRESMOOTH_MM,
        "native: Gaussian sigma on both images before comparing (CBCT noise and streaks are fine)",
        flag="--rso-presmooth",
        metavar="MM",
    )
    returns: bool = setting(
        DEFAULT_RSO_RETURNS,
        "native: return the box to an earlier state of the session (no registration, the general model, "
        "...) where the images the current field was not fitted to prefer it",
        flag="--rso-returns",
    )
    match_artefacts: bool = setting(
        DEFAULT_RSO_MATCH_ARTEFACTS,
        "compare (native) or fit (network modes) artefact-matched images where both images' projection "
        "geometries are given",
        flag="--rso-match-artefacts",
    )
    scan_rule: bool = setting(
        DEFAULT_RSO_SCAN_RULE,
        "native: where the geometry files say both phases are TV reconstructions, decline box steps on a "
        "half-fan scan (they were as often wrong as right) and skip the second opinion on a full-fan one; "
        "without geometry files, decline them where the images carry the streaks of few-view cone-beam "
        "phases (rso.core.view_streaks)",
        flag="--rso-scan-rule",
    )

    @classmethod
    def unguarded(cls, **fields) -> RSOSettings:
        """Settings with every guard rule that has an off value turned off, and ``fields``: for timings,
        which measure a step that is kept whatever the images say."""
        off = {
            "min_gain": 0.0,
            "max_disagreement_mm": 0.0,
            "min_axis_share": 0.0,
            "min_motion_left": 0.0,
            "min_end_distance_mm": 0.0,
        }
        return cls(**off, **fields)

    def __post_init__(self):
        for name in ("mode", "compose", "similarity"):
            _check_choice(self, name)
        if self.mode in FIELD_MODES and self.compose != "local":
            raise InputError(
                f"the {self.mode} mode changes only the box: use composition local, or mode full or "
                "crop for global"
            )
        if self.iterations is None:
            self.iterations = DEFAULT_NATIVE_ITERATIONS if self.mode == "native" else PAPER_RSO_ITERATIONS
        check_iterations(self.iterations)
        _check_signs(
            self,
            (
                "blend_margin_mm",
                "smoothness",
                "min_gain",
                "max_added_fold_share",
                "min_end_distance_mm",
                "max_disagreement_mm",
                "presmooth_mm",
            ),
        )
        if self.min_unfitted_gain >= 1:
            raise InputError(f"min_unfitted_gain must be below 1, not {self.min_unfitted_gain}")
        for name in ("min_axis_share", "min_motion_left", "max_outside_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must lie in 0..1, not {getattr(self, name)}")
        _check_signs(self, positive=("control_spacing_mm", "step_mm", "learning_rate"))


SETTINGS = (EngineSettings, PairInputs, ISOSettings, RSOSettings)
