"""``register``: general model -> ISO -> RSO on each box, and the results at native resolution."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields

from rso.cli.common import (
    add_engine_arguments,
    add_geometry_arguments,
    add_settings,
    engine_from_args,
    number_list,
    settings_from_args,
)
from rso.options import DEFAULT_OUTPUTS, DEFAULT_PREALIGN, DEFAULT_WRITE_INVERSE, PREALIGNMENTS
from rso.settings import ISOSettings, PairInputs, RSOSettings

ISO_PREFIX, RSO_PREFIX = "iso_", "rso_"  # their options' dests: the two share field names


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register a moving image to a fixed one: general model, ISO, then RSO on each box",
        description="General model -> ISO -> RSO on each --roi/--roi-ijk box, in order; writes the "
        "warped image, the displacement field, the difference image, quality maps (det J, folding, the last "
        "step's change) and a report; with --labels also the labels carried onto the fixed image.",
    )
    parser.add_argument("--fixed", required=True, help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    parser.add_argument("--moving", required=True, help="moving image")
    parser.add_argument("--out", required=True, help="output folder")
    add_engine_arguments(parser)
    add_settings(parser.add_argument_group("ISO (the whole image)"), ISOSettings, ISO_PREFIX)
    add_box_arguments(parser)
    add_rso_arguments(parser)
    # The pair's own files: demo and batch take them from their case or CSV, never as flags they would drop.
    add_geometry_arguments(parser)
    parser.add_argument("--truth", help="ground-truth displacement field (ITK, fixed -> moving) for TRE")
    parser.add_argument("--reference", help="image to measure RMSE against (default: the fixed image)")
    add_mask_arguments(parser)
    add_label_arguments(parser)
    add_landmark_arguments(parser)
    add_series_arguments(parser)
    add_alignment_arguments(parser)
    parser.add_argument("--no-figure", action="store_true", help="skip report.png")
    parser.set_defaults(func=run)


def add_mask_arguments(parser) -> None:
    """--fit-mask (what ISO and RSO fit), --metrics-mask (where metrics are measured), --mask (old name)."""
    parser.add_argument(
        "--fit-mask",
        metavar="FILE",
        help="a binary image (nonzero inside; any grid that overlaps the fixed image): ISO's and RSO's "
        "similarity is measured only inside it, as ANTs' and elastix's masks limit the fit (the smoothness "
        "stays global); e.g. the lungs, so that the ribs' sliding and the table do not pull the field",
    )
    metrics = parser.add_mutually_exclusive_group()
    metrics.add_argument(
        "--metrics-mask",
        metavar="FILE",
        help="where whole-image and box metrics are measured, e.g. a body mask (default: everywhere); "
        "it does not change the registration",
    )
    metrics.add_argument("--mask", metavar="FILE", help="deprecated: the same as --metrics-mask")


def metrics_mask_from_args(args) -> str | None:
    """--metrics-mask, or the deprecated --mask with a warning."""
    if args.mask:
        logging.getLogger(__name__).warning(
            "--mask is deprecated: it is --metrics-mask (where metrics are measured); "
            "--fit-mask limits what the registration fits"
        )
    return args.metrics_mask or args.mask


def add_alignment_arguments(parser) -> None:
    """--initial-transform or --prealign (T0, composed before the general model), --inverse."""
    group = parser.add_argument_group("initial alignment and the inverse (docs/cli.md)")
    group.add_argument(
        "--initial-transform",
        metavar="FILE",
        help="an ITK transform mapping fixed points to moving points, as ANTs, elastix's transformix and "
        "Slicer write them (.tfm, .txt, .h5, .mat: Euler, similarity, affine, a displacement field or a "
        "composite of those; or a displacement field image): the moving image is resampled through it "
        "before the general model, and every result (field, warped image, transform.h5) includes it",
    )
    group.add_argument(
        "--prealign",
        choices=PREALIGNMENTS,
        default=DEFAULT_PREALIGN,
        help="compute the initial transform instead: rigid (Euler, Mattes mutual information, three "
        "resolutions), e.g. for a CT and a CBCT of different days; written as prealign.tfm",
    )
    group.add_argument(
        "--outputs",
        type=output_list,
        default=DEFAULT_OUTPUTS,
        metavar="LIST",
        help="what to write besides report.json and transform.h5 (the transform as ITK composes it: the "
        "model-grid field and each box's native correction): comma-separated from warped, difference "
        "(CT as whole HU, int16), displacement (the dense field at the fixed image's resolution), "
        "quality_maps (det J, folding, the last step's change), or all "
        f"(default: {','.join(DEFAULT_OUTPUTS)})",
    )
    group.add_argument(
        "--inverse",
        action="store_true",
        default=DEFAULT_WRITE_INVERSE,
        help="also write inverse_displacement.nii.gz: the moving -> fixed field on the moving image's grid "
        "(its round trip's residual in report.json)",
    )


def add_series_arguments(parser) -> None:
    parser.add_argument(
        "--fixed-series",
        metavar="UID|N",
        help="the series of a DICOM folder holding several (its series instance UID or its index as "
        "`rso-registration series DIR` lists them); such a folder without it is refused",
    )
    parser.add_argument("--moving-series", metavar="UID|N", help="the same for the moving image's folder")


def add_landmark_arguments(parser) -> None:
    parser.add_argument(
        "--landmarks-fixed",
        metavar="FILE",
        help="landmarks on the fixed image: Slicer markups (.mrk.json, .fcsv), CSV stating LPS or RAS, "
        "DIR-Lab text (1-based voxel indices on the fixed image), elastix point files or VTK points; "
        "their TRE after each step goes into report.json (landmark_tre_mm) and the summary table",
    )
    parser.add_argument("--landmarks-moving", metavar="FILE", help="the same landmarks on the moving image")
    parser.add_argument(
        "--landmarks-pairing",
        choices=("order", "label"),
        default="order",
        help="pair the two sets by their order in the files (default) or by label",
    )


def add_label_arguments(parser) -> None:
    parser.add_argument(
        "--labels",
        metavar="LABELS",
        help="label map drawn on the moving image (NIfTI/NRRD/.seg.nrrd, whole numbers, 0 = background): "
        "carried onto the fixed image as labels_warped.nii.gz, with labels_report.json",
    )
    parser.add_argument(
        "--labels-colors",
        metavar="FILE",
        help="names and colours of the labels: a colour table, one 'value name r g b a' line per label "
        "(default: the .seg.nrrd's segment names, else 'label N')",
    )
    parser.add_argument(
        "--labels-reference",
        metavar="LABELS",
        help="the same labels drawn on the fixed image: Dice and HD95 of the carried labels in the report",
    )


def add_box_arguments(parser) -> None:
    parser.add_argument(
        "--roi",
        type=number_list(6),
        action="append",
        default=[],
        metavar="R1,A1,S1,R2,A2,S2",
        help="box corners in RAS mm as Slicer shows them; repeatable, applied in order",
    )
    parser.add_argument(
        "--roi-ijk",
        type=number_list(6, int),
        action="append",
        default=[],
        metavar="I1,J1,K1,I2,J2,K2",
        help="box in fixed-image voxel indices (both ends included); repeatable",
    )


def add_rso_arguments(parser) -> None:
    """Every RSOSettings field (rso.settings); the native mode's defaults were chosen on the training
    anatomies (docs/decisions.md)."""
    add_settings(parser.add_argument_group("RSO (each box; docs/method.md)"), RSOSettings, RSO_PREFIX)


def rso_settings_from_args(args) -> RSOSettings:
    return settings_from_args(RSOSettings, args, RSO_PREFIX)


def run(args) -> int:
    from rso.cli.progress import step_progress
    from rso.core.summary import format_table, summary_row
    from rso.core.workflow import RegisterJob, run_register_job

    job = RegisterJob(
        inputs=pair_inputs_from_args(args),
        out=args.out,
        engine=engine_from_args(args),
        iso=settings_from_args(ISOSettings, args, ISO_PREFIX),
        rso=rso_settings_from_args(args),
        boxes_ras=args.roi,
        boxes_ijk=args.roi_ijk,
        figure=not args.no_figure,
        labels=args.labels,
        labels_colors=args.labels_colors,
        labels_reference=args.labels_reference,
        landmarks_fixed=args.landmarks_fixed,
        landmarks_moving=args.landmarks_moving,
        landmarks_pairing=args.landmarks_pairing,
        inverse=args.inverse,
        outputs=args.outputs,
    )
    with step_progress(not args.quiet) as progress:
        session, paths = run_register_job(job, progress=progress)
    rows = [summary_row(r) for r in session.history]
    if "landmarks" in paths:  # the landmarks' mean TRE after each step, as the report has it
        steps = json.loads(paths["report"].read_text())["steps"]
        rows = [{**row, "landmark_tre_mm": step["landmark_tre_mm"]["mean"]} for row, step in zip(rows, steps)]
    print(format_table(rows))
    if "labels_report" in paths:
        print(labels_text(json.loads(paths["labels_report"].read_text())))
    return 0


def output_list(text: str) -> tuple[str, ...]:
    """``--outputs``: comma-separated output names, or ``all``."""
    from rso.core.results import ALL_OUTPUTS

    names = tuple(name for name in text.replace(" ", "").split(",") if name)
    if names == ("all",):
        return ALL_OUTPUTS
    unknown = sorted(set(names) - set(ALL_OUTPUTS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(ALL_OUTPUTS)}"
        )
    return names


def pair_inputs_from_args(args) -> PairInputs:
    """The pair's files as register's flags name them."""
    names = [f.name for f in fields(PairInputs) if f.name != "metrics_mask"]
    return PairInputs.from_dict(
        {**{name: getattr(args, name) for name in names}, "metrics_mask": metrics_mask_from_args(args)}
    )


def labels_text(report: dict) -> str:
    """'labels (ml, moving -> fixed): lungs 2792.2 -> 2881.5 (Dice 0.98, HD95 4.5 mm)' plus what is out
    of view."""
    parts = []
    for row in report["labels"]:
        overlap = f" (Dice {row['dice']:.3f}, HD95 {row['hd95_mm']} mm)" if "dice" in row else ""
        parts.append(f"{row['name']} {row['volume_ml_moving']:.1f} -> {row['volume_ml_fixed']:.1f}{overlap}")
    lines = ["labels (ml, moving -> fixed): " + "; ".join(parts)]
    for key in ("outside_field_of_view", "partly_outside_field_of_view", "kept_from_vanishing"):
        if report[key]:
            lines.append(f"{key.replace('_', ' ')}: {', '.join(report[key])}")
    return "\n".join(lines)
