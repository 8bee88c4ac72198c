"""``review``: the browser review page (docs/review-app.md) on 127.0.0.1, for one pair or a session folder.

The page needs the run's token (printed in its address); ``--unix-socket`` serves it on a socket
only this user can connect to; the Files menu opens and writes only inside ``--allow-dir`` folders.

The page is RSORegistrationReview (trame-slicer, the ``review`` extra); it is imported only here,
inside ``run``, so that the engine and the other subcommands never load Slicer, VTK or trame.
"""

from __future__ import annotations

from rso.cli.common import add_engine_arguments, add_geometry_arguments
from rso.options import (
    COMPOSITIONS,
    DEFAULT_COMPOSITION,
    DEFAULT_ISO_ITERATIONS,
    DEFAULT_RSO_ITERATIONS,
    DEFAULT_RSO_MODE,
    PREALIGNMENTS,
    RSO_MODES,
)

DEFAULT_PORT = 8080


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "review",
        help="review and refine a registration in the browser (served on 127.0.0.1 only, with a token)",
        description="A web page with Slicer's slice views: register, refine the whole image, draw boxes to "
        "refine (RSO), undo and export. It listens on 127.0.0.1 only (or a Unix socket) and needs the token "
        "printed in its address; from another machine use an SSH tunnel (docs/review-app.md).",
    )
    parser.add_argument("--fixed", help="fixed image (NIfTI, NRRD, MHA or a DICOM folder)")
    parser.add_argument("--moving", help="moving image")
    parser.add_argument(
        "--truth", help="ground-truth displacement field (ITK, fixed -> moving): the table shows TRE"
    )
    add_geometry_arguments(parser)
    add_pair_arguments(parser)
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
    _add_access_arguments(parser.add_argument_group("access"))
    _add_refinement_arguments(parser.add_argument_group("refinement"))
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def _add_access_arguments(group) -> None:
    """Where the page listens, its token and the folders its Files menu may use."""
    group.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one); with --unix-socket, the "
        "PC's end of the SSH tunnel the printed command suggests",
    )
    group.add_argument(
        "--token",
        help="the page's access token (16+ characters from A-Z a-z 0-9 _ . ~ -; default: $RSO_REVIEW_TOKEN, "
        "else a new random one, printed in the page's address). Every user of the host can read a "
        "command line: prefer the environment variable",
    )
    group.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="serve on this Unix socket (mode 0600: only you can connect) instead of a TCP port; "
        "forward it with ssh -L PORT:PATH",
    )
    group.add_argument(
        "--allow-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder the page's Files menu may open images in and export to (repeatable; default: the "
        "folders of the images given, or the session folder); any path outside is refused",
    )


def _add_refinement_arguments(group) -> None:
    """Iterations and mode of the page's ISO and RSO steps."""
    group.add_argument(
        "--iso",
        type=int,
        default=DEFAULT_ISO_ITERATIONS,
        metavar="N",
        help=f"iterations of 'Refine whole image' (default {DEFAULT_ISO_ITERATIONS})",
    )
    group.add_argument(
        "--rso",
        type=int,
        default=DEFAULT_RSO_ITERATIONS,
        metavar="N",
        help=f"RSO iterations per box (default {DEFAULT_RSO_ITERATIONS})",
    )
    group.add_argument("--rso-mode", choices=RSO_MODES, default=DEFAULT_RSO_MODE)
    group.add_argument("--compose", choices=COMPOSITIONS, default=DEFAULT_COMPOSITION)


def add_pair_arguments(parser) -> None:
    """--fixed-series/--moving-series (DICOM folders of several series), --initial-transform or --prealign,
    --fit-mask: the pair's own inputs, as register takes them."""
    from rso.cli.register import add_series_arguments

    add_series_arguments(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--initial-transform",
        metavar="FILE",
        help="an ITK transform mapping fixed points to moving points (.tfm, .txt, .h5: linear, a "
        "displacement field or a composite; or a displacement field image): the registration starts from it "
        "and its results include it",
    )
    start.add_argument(
        "--prealign",
        choices=PREALIGNMENTS,
        help="compute the initial transform instead: rigid (mutual information), e.g. for a CT and a CBCT",
    )
    parser.add_argument(
        "--fit-mask",
        metavar="FILE",
        help="a binary image (nonzero inside): ISO and RSO compare the images only inside it",
    )


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
        "prealign": args.prealign or "",
    }
    engine = {name: getattr(args, name) for name in ("precision", "network_similarity", "network_smoothness")}
    return ReviewOptions(
        fixed=args.fixed,
        moving=args.moving,
        truth=args.truth,
        fixed_geometry=args.fixed_geometry,
        moving_geometry=args.moving_geometry,
        placement=args.placement,
        fixed_series=args.fixed_series,
        moving_series=args.moving_series,
        initial_transform=args.initial_transform,
        fit_mask=args.fit_mask,
        session=args.session,
        out=args.out,
        parameters=parameters,
        engine=engine,
    )


def review_access(args):
    """The page's ReviewAccess: the token (checked, or a new one), the allowed folders, the socket."""
    import os

    from RSORegistrationReview.access import TOKEN_ENV, ReviewAccess, checked_token

    token = checked_token(args.token or os.environ.get(TOKEN_ENV) or None)
    return ReviewAccess(token=token, allow_dirs=list(args.allow_dir), unix_socket=args.unix_socket)


def run(args) -> int:
    try:
        from RSORegistrationReview.app import serve
    except ModuleNotFoundError as exc:
        from rso.errors import InputError

        raise InputError(
            f"the review app needs the 'review' extra ({exc.name} is missing): "
            "pip install 'rso-registration[review]'"
        ) from None
    serve(review_options(args), args.port, access=review_access(args))
    return 0
