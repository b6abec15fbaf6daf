"""``rdmm warp``: apply a registration output folder to images, label maps or points.

* ``rdmm warp --transform DIR --moving F --out F [--labels] [--inverse]``: resample a
  source-space image into the target grid (``--inverse``: a target-space image into the source
  grid); ``--labels`` uses nearest neighbour and keeps the integer type. Without it, an
  integer image with few distinct values (a label map?) gets a one-line warning on stderr.
* ``rdmm warp --transform DIR --points P.csv --out Q.csv [--inverse]``: map physical points
  (CSV header ``x,y,z`` or ``x,y``, LPS mm as in ITK/ANTs) from the target to the source
  (``--inverse``: from the source to the target).

``--threads N``: CPU threads (default: ``RDMM_NUM_THREADS``, else automatic: for images from
the output grid, :func:`rdmm_lightning.runtime.choose_num_threads`; one for points).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rdmm_lightning.cli.main import CLIError, add_threads_option, user_error

__all__ = ["add_parser"]

DESCRIPTION = """\
Apply the transform of a registration folder (written by 'rdmm register' or 'rdmm infer').
Images: --moving lives in the source's physical space and is resampled into the target's grid
(--inverse: a target-space image into the source's grid). Points: --points holds target points
(CSV header x,y,z or x,y; LPS millimetres, as SimpleITK and ANTs) and --out gets their source
positions (--inverse: source points -> target positions)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``warp`` parser."""
    parser = subparsers.add_parser(
        "warp",
        help="apply a registration to an image, label map or points",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--transform", required=True, metavar="DIR", help="registration folder")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--moving", metavar="F", help="image or label map to resample")
    what.add_argument("--points", metavar="P.csv", help="CSV of physical points (x,y[,z])")
    parser.add_argument("--out", required=True, metavar="F", help="output image or CSV file")
    parser.add_argument(
        "--labels", action="store_true", help="--moving is a label map: nearest neighbour"
    )
    parser.add_argument(
        "--inverse",
        action="store_true",
        help="target space -> source space for images, source -> target for points",
    )
    add_threads_option(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.transform import LabelMapWarning, transform_points, warp_image

    if args.points is not None and args.labels:
        raise CLIError("--labels applies to --moving images, not to --points")
    options = {"inverse": args.inverse, "threads": args.threads}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LabelMapWarning)
        try:
            if args.points is not None:
                transform_points(args.transform, args.points, args.out, **options)
            else:
                warp_image(args.transform, args.moving, args.out, labels=args.labels, **options)
        except ValueError as exc:
            raise user_error(exc) from exc
    for w in caught:
        if issubclass(w.category, LabelMapWarning):
            print(f"rdmm warp: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {args.out}")
    return 0
