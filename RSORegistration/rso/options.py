"""Every choice a user makes and its default, in one light module (no torch).

The CLI, the worker, the session, the Slicer parameter node and the review app all take their
defaults from here; a test checks that none of them declares its own. How each frozen default was
chosen, with the cases and the numbers: docs/decisions.md.
"""

# native: a smooth correction at the fixed image's resolution in the box (rso.core.native); direct: the
# model-grid field in the box; crop / full: the network fine-tuned on a window / on the whole image (paper).
RSO_MODES = ("native", "direct", "crop", "full")
COMPOSITIONS = ("global", "local")  # the fine-tuned field everywhere (paper) / the box only, blended
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "auto")
SIMILARITIES = ("mse", "lncc", "mind")  # the network steps' loss (ISO, and RSO in the network modes)
NATIVE_SIMILARITIES = ("mind", "lncc", "mse")
# What training compares: the pair's images (the paper's loss) or the simulator's true field
# (rso.training.truth)
SUPERVISIONS = ("images", "truth")
# The scanner presets the demo scans its held-out patient with (rso.evaluation.demo): Elekta XVI-like full
# fan and Varian TrueBeam-like half fan.
DEMO_SCANNERS = ("xvi", "truebeam")

DEFAULT_ISO_ITERATIONS = 100  # the paper's Algorithm 1: ISO-100, then RSO-400 per box
PAPER_RSO_ITERATIONS = 400
PAPER_LEARNING_RATE = 3e-4  # Adam, ISO, RSO and training alike (Table 3)
DEFAULT_RSO_MODE = "native"  # misaligned boxes' TRE -42 %, control boxes kept; network modes ~3x worse
DEFAULT_COMPOSITION = "local"
DEFAULT_BLEND_MARGIN_MM = 15.0  # local composition: the new field fades to the old one across this margin
DEFAULT_SIMILARITY = "mse"  # MIND: worse on parallel beams, no better on held-out cone-beam phases
DEFAULT_SMOOTHNESS = 0.01  # weight of the diffusion term on a displacement in voxels (MSE on (HU+1000)/2000)
# The same term's weight with truth supervision (squared error in voxels^2): none, as 0.1 and 1 did not reduce
# the folds (docs/decisions.md, "A smoothness term on step 3")
DEFAULT_TRUTH_SMOOTHNESS = 0.0
# bf16 where the hardware has it natively (2-3x faster, same TRE); a step that diverges is redone in fp32.
DEFAULT_PRECISION = "auto"
# Native-resolution RSO (rso.core.native): swept on the training anatomies only, frozen before the
# held-out patient's cases were simulated.
DEFAULT_NATIVE_ITERATIONS = 60
DEFAULT_RSO_SIMILARITY = "mind"
DEFAULT_RSO_CONTROL_SPACING_MM = 8.0
DEFAULT_RSO_SMOOTHNESS = 3.0
DEFAULT_RSO_STEP_MM = 0.3
# The guard: a step must explain this share of the box's remaining difference. 0.125 with the four-patient
# general model: no harm on training anatomies or fresh seeds 83/84, and a box that already agrees is still
# declined (docs/decisions.md).
DEFAULT_RSO_MIN_GAIN = 0.125
# The guard on the images as given, where the step compares artefact-matched ones: twice the most that a
# harmful cone-beam step of the training anatomies explained there (docs/decisions.md).
DEFAULT_RSO_MIN_UNFITTED_GAIN = 0.10
# Where the projection geometry is known: a circular scan's streaks lie across its rotation axis, so a
# correction that lies mostly across it is as likely streak as motion. Decline one with less than this share
# of its length along the axis: just above the most that a harmful cone-beam step of the training anatomies
# had (0.52; docs/decisions.md, "The axis share").
DEFAULT_RSO_MIN_AXIS_SHARE = 0.55
# Artefacts stay where the scanner put them, so they favour no motion: decline a step (a correction or a
# return) that leaves less than this share of the box's RMS motion. 0.4 is the earlier rule's strength for
# a step straight back (it declined taking back more than 0.6); a step that passes through no motion, or
# turns aside, is not what fixed artefacts favour and is no longer counted. The training anatomies' helpful
# steps left at least 0.66 of a motion of 2 mm or more (docs/decisions.md, "The motion left").
DEFAULT_RSO_MIN_MOTION_LEFT = 0.4
# A step may add folded voxels (det J <= 0) in box + margin up to this share of those the field already has
# there (none where it has none): 0, none at all (docs/decisions.md, "Folds the field already has": one
# training step, too few to choose more).
DEFAULT_RSO_MAX_ADDED_FOLD_SHARE = 0.0
# Decline a step where the current or the corrected field sends more than this share of the box outside the
# moving image, whose crop holds air there (1: never; no threshold declined a harmful training step:
# docs/decisions.md, "A box at the image's superior or inferior end").
DEFAULT_RSO_MAX_OUTSIDE_SHARE = 1.0
# Where the projection geometry is known, decline a box step where the box comes closer than this (mm) to the
# fixed image's end along the scanner's rotation axis: a cone-beam reconstruction's last centimetres there are
# its least reliable, and the artefacts fixed there favour no motion. Every harmful step of the lung1
# training cases lay within 20 mm of the end (docs/decisions.md, "A box at the image's superior or inferior
# end"; 0: anywhere).
DEFAULT_RSO_MIN_END_DISTANCE_MM = 20.0
# Below this RMS motion in the box the motion left is not judged: a share of almost no motion says nothing.
MOTION_LEFT_MIN_MOTION_MM = 2.0
# The second opinion, where the step compares the images as given: the box's mean correction under LNCC may
# differ from MIND's by at most this (mm); chosen on TV phases of the training anatomies (docs/decisions.md).
DEFAULT_RSO_MAX_DISAGREEMENT_MM = 1.0
DEFAULT_RSO_PRESMOOTH_MM = 2.0
# Return the box to an earlier state (no registration, the general model, ...) where the images the current
# field was not fitted to prefer it by the guard's margin (Refinement.choose_return).
DEFAULT_RSO_RETURNS = True
# Compare phase-binned CBCTs artefact-matched where both projection geometries are known
# (rso.core.projection.matching): otherwise the rotation between two phases' streaks looks like motion.
DEFAULT_RSO_MATCH_ARTEFACTS = True
# Where the geometry files say both phases are TV reconstructions: decline native RSO on a half-fan scan, no
# second opinion on a full-fan one (rso.core.projection.scan; docs/decisions.md, "Native RSO on half-fan TV
# phases": chosen on the training boxes, scored on seeds simulated after it was written down; the second
# opinion on full-fan TV phases was chosen again with today's model and undone on fresh seeds: "The second
# opinion on full-fan TV phases").
DEFAULT_RSO_SCAN_RULE = True
# Without geometry files: decline box steps where either image's fine in-plane detail ripples around the
# directions at least this much (rso.core.view_streaks): few-view cone-beam phases, whose streaks the box's
# similarity follows as readily as motion. Chosen on the training anatomies between the steps that helped
# (pairs up to 0.29) and those that harmed (from 0.77); CT pairs reach 0.38 (docs/decisions.md, "Box steps
# without projection geometry: the streaks seen in the image").
NO_GEOMETRY_MAX_MODULATION = 0.45
DEFAULT_ISO_MATCH_ARTEFACTS = True  # ISO too: on the raw pair it fits the streaks
# ISO's change fades to nothing over this distance (mm) from the images' two ends along the body's axis,
# measured where the field ISO started from carries each voxel: tissue carried across an end has no
# counterpart in the other image, and ISO pulled its motion to zero. The smallest fade that helped the
# training pairs and harmed none (docs/decisions.md, "ISO where the scan ends inside the lungs"; 0: none).
DEFAULT_ISO_END_FADE_MM = 20.0
# ISO on the matched pair keeps its field only where the images as given (never fitted) agree better under
# it than under the field it started from, by MIND (rso.core.iso_guard; docs/decisions.md).
DEFAULT_ISO_GUARD = True
# ... by at least this share of their dissimilarity: about twice the most a harmful ISO gained on the
# cone-beam training cases with the bundled model (docs/decisions.md, "ISO's guard needs a margin").
ISO_MIN_GIVEN_GAIN = 0.20
# Without projection geometry ISO keeps its field where at least this share of its change in the lungs lies
# along the body's superior-inferior axis: the lowest multiple of 0.05 that declined every ISO that made a
# training pair worse (docs/decisions.md, "ISO without projection geometry: the axis share").
ISO_MIN_AXIS_SHARE = 0.85
DEFAULT_RSO_ITERATIONS = DEFAULT_NATIVE_ITERATIONS  # the default mode's (Slicer's and the review app's field)
DEFAULT_DEVICE = "auto"
DEFAULT_SEED = 0
# The model expects CT in Hounsfield units; an image that does not look like it (an 8-bit 0-255
# volume, MR) is refused unless the user allows it on purpose (rso.core.imageio.check_ct_intensities).
ALLOW_NON_CT = False
DEFAULT_ENGINE = "local"  # or "ssh:DESTINATION": a worker started over SSH (docs/remote.md)
DEFAULT_BATCH_WORKERS = 2  # batch: pairs registered at once on a local Dask cluster (a process each)
# The initial transform a registration can start from without a file (rso.core.prealign): rigid (Euler,
# Mattes mutual information) brings a CT and a CBCT of other days within the general model's reach.
PREALIGNMENTS = ("rigid",)
DEFAULT_PREALIGN = None  # none: the images' own frames, as for the phases of one 4D CT or CBCT
# What a run writes besides report.json and transform.h5 (rso.core.results.OUTPUTS): sized for a batch of
# pairs; the dense displacement field at the fixed image's resolution and the det J maps only on request.
DEFAULT_OUTPUTS = ("warped", "difference")
DEFAULT_WRITE_INVERSE = False  # the moving -> fixed field costs an iterative inversion: only when asked
