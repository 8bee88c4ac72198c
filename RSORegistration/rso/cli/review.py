"""``review``: the browser review page (docs/review-app.md) on 127.0.0.1, for one pair or a session folder.

The page is RSORegistrationReview (trame-slicer, the ``review`` extra); it is imported only here,
inside ``run``, so that the engine and the other subcommands never load Slicer, VTK or trame.
"""

from __future__ import annotations

from rso.cli.common import add_engine_arguments
from rso.options import (
    COMPOSITIONS,
    DEFAULT_COMPOSITION,
    DEFAULT_ISO_ITERATIONS,
    DEFAULT_RSO_ITERATIONS,
    DEFAULT_RSO_MODE,
    RSO_MODES,
)

DEFAULT_PORT = 8080


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "review",
        help="review and refine a registration in the browser (served on 127.0.0.1 only)",
        description="A web page with Slicer's slice views: register, refine the whole image, draw boxes to refine "
        "(RSO), undo and export. It listens on 127.0.0.1 only; from another machine use an SSH tunnel "
        "(docs/review-app.md).",
    )
    parser.add_argument("--fixed", help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    parser.add_argument("--moving", help="moving image")
    parser.add_argument(
        "--truth", help="ground-truth displacement field (ITK, fixed -> moving): the table shows TRE"
    )
    parser.add_argument(
        "--fixed-views",
        metavar="JSON",
        help="the projection views the fixed image was reconstructed from (a phase-binned CBCT; "
        "rso.core.reprojection): with --moving-views, ISO and RSO compare the images artefact-matched",
    )
    parser.add_argument("--moving-views", metavar="JSON", help="the moving image's projection views")
    parser.add_argument(
        "--session",
        metavar="DIR",
        help="session folder: reopened if it holds one (from review, register or Slicer), "
        "else the new session is kept there (default: a new folder under the cache)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where Export writes (default: beside the session folder, its name + '-export')",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--iso",
        type=int,
        default=DEFAULT_ISO_ITERATIONS,
        metavar="N",
        help=f"iterations of 'Refine whole image' (default {DEFAULT_ISO_ITERATIONS})",
    )
    parser.add_argument(
        "--rso",
        type=int,
        default=DEFAULT_RSO_ITERATIONS,
        metavar="N",
        help=f"RSO iterations per box (default {DEFAULT_RSO_ITERATIONS})",
    )
    parser.add_argument("--rso-mode", choices=RSO_MODES, default=DEFAULT_RSO_MODE)
    parser.add_argument("--compose", choices=COMPOSITIONS, default=DEFAULT_COMPOSITION)
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def review_options(args):
    """The page's ReviewOptions from the command line (RunParameters names for what the logic keeps)."""
    from RSORegistrationReview.controller import ReviewOptions

    if args.iso < 0 or args.rso < 0:
        from rso.errors import InputError

        raise InputError("iterations must be >= 0")
    parameters = {
        "device": args.device,
        "seed": args.seed,
        "isoIterations": args.iso,
        "rsoIterations": args.rso,
        "rsoMode": args.rso_mode,
        "composition": args.compose,
        "modelPath": args.model or "",
        "modelChannels": ",".join(map(str, args.channels or ())),
        "gridShape": ",".join(map(str, args.grid or ())),
    }
    engine = {"precision": args.precision, "similarity": args.similarity, "smoothness": args.smoothness}
    return ReviewOptions(
        fixed=args.fixed,
        moving=args.moving,
        truth=args.truth,
        fixed_views=args.fixed_views,
        moving_views=args.moving_views,
        session=args.session,
        out=args.out,
        parameters=parameters,
        engine=engine,
    )


def run(args) -> int:
    try:
        from RSORegistrationReview.app import serve
    except ModuleNotFoundError as exc:
        from rso.errors import InputError

        raise InputError(
            f"the review app needs the 'review' extra ({exc.name} is missing): "
            "pip install 'rso-registration[review]'"
        ) from None
    serve(review_options(args), args.port)
    return 0
