"""``rdmm data``: write the built-in synthetic datasets, or align a pool to a template.

* ``rdmm data synth2d --out DIR [--pairs N] [--seed S] [--size N]``: the paper's 2D pairs
  (``pairs.csv``).
* ``rdmm data synth3d --out DIR --subjects N [--seed S] [--shape X Y Z] [--spacing SX SY SZ]
  [--visits V] [--sides left right]``: a pool of knee phantoms (``pool.csv``).
* ``rdmm data align POOL_CSV --template SUBJECT_OR_FILE --out DIR [--exclude PAIRS_CSV]
  [--pairs PAIRS_CSV] [--data-dir D] [--max-time-per-volume S] [--device D]``: a pool aligned
  affinely to one template (:mod:`rdmm_lightning.pipeline.align`).

All take ``--threads N`` like every ``rdmm`` command; the generators are NumPy code, so the
count (torch's) changes nothing for them (it sets align's registration threads).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

from rdmm_lightning.cli.main import CLIError, add_device_option, add_threads_option, user_error
from rdmm_lightning.options import Side, values

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` parser with its ``synth2d`` and ``synth3d`` sub-commands."""
    parser = subparsers.add_parser(
        "data",
        help="write the built-in synthetic datasets, or align a pool to a template",
        description="Write the built-in synthetic datasets as NIfTI files plus a CSV index, or "
        "align a pool affinely to a template (align).",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)

    p2 = sub.add_parser("synth2d", help="the paper's synthetic 2D pairs (pairs.csv)")
    p2.add_argument("--out", required=True, help="output folder (new, empty or a synth2d set)")
    p2.add_argument("--pairs", type=int, default=40, help="number of pairs (default 40)")
    p2.add_argument("--seed", type=int, default=2018, help="random seed (default 2018)")
    p2.add_argument("--size", type=int, default=200, help="image size, >= 48 (default 200)")
    add_threads_option(p2)
    p2.set_defaults(func=_run_synth2d)

    p3 = sub.add_parser("synth3d", help="a pool of knee-like 3D phantoms (pool.csv)")
    p3.add_argument("--out", required=True, help="output folder (new, empty or a synth3d pool)")
    p3.add_argument("--subjects", type=int, required=True, help="number of subjects (>= 1)")
    p3.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p3.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[48, 64, 64],
        metavar=("X", "Y", "Z"),
        help="grid size (default 48 64 64)",
    )
    p3.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=[2.0, 1.0, 1.0],
        metavar=("SX", "SY", "SZ"),
        help="voxel size in mm (default 2 1 1)",
    )
    p3.add_argument("--visits", type=int, default=1, help="visits per subject (default 1)")
    p3.add_argument(
        "--sides",
        nargs="+",
        choices=values(Side),
        default=list(values(Side)),
        help="knees per subject and visit (default left right)",
    )
    add_threads_option(p3)
    p3.set_defaults(func=_run_synth3d)
    _add_align_parser(sub)


def _add_align_parser(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser(
        "align",
        help="align a pool affinely to one template (subjects.csv on the template's grid)",
        description="Register every volume of a pool CSV affinely to a template (affine-opt, "
        "physical spacing) and write the images (linear) and label maps (nearest) on the "
        "template's grid into OUT/images, OUT/labels, with OUT/subjects.csv and OUT/align.json. "
        "Rerunning continues a killed run (volumes done are skipped). Exit code 1 when a "
        "volume failed.",
    )
    pa.add_argument("pool", metavar="POOL_CSV", help="pool CSV (path/image, label, subject)")
    pa.add_argument("--template", required=True, help="a subject id of the pool or an image file")
    pa.add_argument("--template-label", help="label map of a template file (for Dice)")
    pa.add_argument("--out", required=True, help="output folder (new, empty or an earlier run)")
    pa.add_argument("--data-dir", help="folder of relative POOL_CSV, --exclude and --template")
    pa.add_argument(
        "--exclude", metavar="PAIRS_CSV", help="drop every subject whose images these pairs use"
    )
    pa.add_argument(
        "--pairs",
        metavar="PAIRS_CSV",
        help="also write this pairs CSV (pool volumes) on the aligned volumes into OUT",
    )
    pa.add_argument("--path-column", help="image column (default: path, else image)")
    pa.add_argument("--label-column", help="label column (default: label when present)")
    pa.add_argument("--subject-column", default="subject", help="subject column (default subject)")
    pa.add_argument(
        "--max-time-per-volume", type=float, metavar="S", help="time limit of each registration"
    )
    add_threads_option(pa)
    add_device_option(pa)
    pa.set_defaults(func=_run_align)


def _progress(total: int, what: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress callback (tqdm bar on a terminal, nothing otherwise) and its closer."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with pytorch-lightning
        return (lambda done, n: None), (lambda: None)
    bar = tqdm(total=total, desc=what, unit="img", file=sys.stderr, disable=None, leave=False)

    def update(done: int, n: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def _threads(threads: int | None, voxels: int) -> AbstractContextManager[int]:
    """The thread scope of one data set (:mod:`rdmm_lightning.runtime`)."""
    from rdmm_lightning.runtime import choose_num_threads, num_threads

    return num_threads(choose_num_threads(threads, voxels))


def _run_synth2d(args: argparse.Namespace) -> int:
    from rdmm_lightning.synthetic.nifti import DatasetDirError
    from rdmm_lightning.synthetic.synth2d import write_synth2d

    if args.pairs < 1:
        raise CLIError(f"--pairs must be >= 1; got {args.pairs}")
    if args.size < 48:
        raise CLIError(f"--size must be >= 48; got {args.size}")
    update, close = _progress(args.pairs, "synth2d pairs")
    try:
        with _threads(args.threads, args.size**2):
            csv_path = write_synth2d(args.out, args.pairs, args.seed, args.size, progress=update)
    except DatasetDirError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        close()
    print(f"wrote {args.pairs} synth2d pairs ({args.size}x{args.size}) -> {csv_path}")
    return 0


def _run_synth3d(args: argparse.Namespace) -> int:
    from rdmm_lightning.synthetic.nifti import DatasetDirError
    from rdmm_lightning.synthetic.synth3d import write_synth3d_pool

    if args.subjects < 1:
        raise CLIError(f"--subjects must be >= 1; got {args.subjects}")
    if args.visits < 1:
        raise CLIError(f"--visits must be >= 1; got {args.visits}")
    if min(args.shape) < 8:
        raise CLIError(f"--shape entries must be >= 8; got {args.shape}")
    if min(args.spacing) <= 0:
        raise CLIError(f"--spacing entries must be > 0; got {args.spacing}")
    sides = list(dict.fromkeys(args.sides))
    total = args.subjects * args.visits * len(sides)
    update, close = _progress(total, "synth3d images")
    try:
        with _threads(args.threads, args.shape[0] * args.shape[1] * args.shape[2]):
            csv_path = write_synth3d_pool(
                args.out,
                args.subjects,
                seed=args.seed,
                shape=args.shape,
                spacing=args.spacing,
                visits=args.visits,
                sides=sides,
                progress=update,
            )
    except DatasetDirError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        close()
    shape = "x".join(str(n) for n in args.shape)
    print(f"wrote {total} synth3d images ({args.subjects} subjects, {shape}) -> {csv_path}")
    return 0


def _run_align(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.align import align_pool

    limit = args.max_time_per_volume
    if limit is not None and not limit > 0:
        raise CLIError(f"--max-time-per-volume must be > 0; got {limit}")
    from tqdm import tqdm

    bar = tqdm(desc="align", unit="vol", file=sys.stderr, disable=None, leave=False)

    def on_volume(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = align_pool(
            args.pool,
            args.template,
            args.out,
            template_label=args.template_label,
            data_dir=args.data_dir,
            exclude=args.exclude,
            pairs=args.pairs,
            path_column=args.path_column,
            label_column=args.label_column,
            subject_column=args.subject_column,
            threads=args.threads,
            max_time=limit,
            device=args.device,
            report=lambda line: tqdm.write(line, file=sys.stderr),
            on_volume=on_volume,
        )
    except ValueError as exc:
        raise user_error(exc) from exc
    finally:
        bar.close()
    written = f"{summary.csv_path}" + (f", {summary.pairs_path}" if summary.pairs_path else "")
    print(f"{summary.line()} -> {written}")
    return 1 if summary.failed else 0
