"""The choices a user makes, in one light module (no torch): the CLI, the session and Slicer share it."""

RSO_MODES = ("full", "crop", "direct")  # whole image fed (paper) / a window around the box / the field itself
COMPOSITIONS = ("global", "local")  # the fine-tuned field everywhere (paper) / the box only, blended
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "auto")
# The benchmark (bench/README.md) chose these: on 12 boxes, direct/local matched full/global and
# crop/local in box TRE, was 11x faster per step (6 s latency) and left the rest of the field as it was.
DEFAULT_RSO_MODE = "direct"
DEFAULT_COMPOSITION = "local"
SIMILARITIES = ("mse", "lncc")
# bf16 where the hardware has it natively: 2-3x faster than fp32 at the same TRE (README, Results);
# a step that diverges in bf16 is repeated in fp32 (RegistrationSession._run).
DEFAULT_PRECISION = "auto"
