"""``rdmm evaluate``: register every pair of a CSV file and summarise Dice, folds and time.

``rdmm evaluate (--checkpoint CKPT | --model NAME) --pairs PAIRS.csv --out DIR [--resume]
[--strict] [--num-steps K] [--refine-steps N] [--affine net|opt|none] [--network-precision P]
[--compile-shooting]
[--device auto|cpu|cuda[:N]] [--threads N] [--max-time S] [--preset NAME] [--config F]
[--print-config] [key=value ...]``

A thin layer over :func:`rdmm_lightning.pipeline.evaluate.evaluate_pairs` (which checks the
options too): each pair is registered as ``rdmm infer`` (``--checkpoint``) or ``rdmm register``
(``--model``) would, into ``DIR/pair_XXX/``; then ``DIR/results.csv`` and ``DIR/summary.json``
are written and a markdown table of the means is printed. ``--resume`` continues a run that
was killed or failed (pairs finished with the same options are kept, not registered again).
Exit codes as for ``rdmm register`` (:func:`~rdmm_lightning.cli.register.exit_status`): 3 when
a pair's deformable stage ran 0 iterations, or, with ``--strict``, when a pair stopped early.
With ``--model``, ``--preset`` and ``--print-config`` work as for ``rdmm register``
(``--print-config`` needs neither ``--pairs`` nor ``--out``).
"""

from __future__ import annotations

import argparse
import sys

from rdmm_lightning.cli.infer import (
    add_affine_option,
    add_compile_option,
    add_precision_option,
)
from rdmm_lightning.cli.main import CLIError, add_device_option, add_threads_option, user_error
from rdmm_lightning.cli.register import (
    INCOMPLETE,
    _collect_trailing_overrides,
    add_config_options,
    add_strict_option,
    print_config,
    with_preset,
)
from rdmm_lightning.options import Model, values

__all__ = ["add_parser"]

DESCRIPTION = """\
Register every pair of PAIRS.csv (columns source,target[,source_label,target_label]; relative
paths are relative to the CSV's folder) with a trained network (--checkpoint, as `rdmm infer`)
or a pairwise optimiser (--model, as `rdmm register`). Writes each pair's outputs into
DIR/pair_001, DIR/pair_002, ..., then DIR/results.csv (one row per pair: Dice, det J <= 0, folds,
time) and DIR/summary.json (mean and std over the pairs, model, resolved options). --resume
continues a killed or failed run into the same DIR: pairs it finished with the same options are
kept, the others are registered."""

EPILOG = """\
--model only: --max-time (per pair), --preset, --config, --print-config and key=value overrides
  as for `rdmm register`, e.g. iterations=[30,20,10] similarity=ncc solver.num_steps=20
--checkpoint only: --num-steps, --refine-steps, --affine, --network-precision,
  --compile-shooting as for `rdmm infer` (with --model: solver.compile=true)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="register the pairs of a CSV file and summarise the metrics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="option overrides")
    parser.add_argument("--checkpoint", metavar="CKPT", help="trained network checkpoint")
    parser.add_argument(
        "--model", metavar="NAME", help=f"pairwise optimiser: {'|'.join(values(Model))}"
    )
    parser.add_argument("--pairs", metavar="PAIRS.csv", help="CSV of pairs (required)")
    parser.add_argument("--out", metavar="DIR", help="output folder (required)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the pairs an earlier (killed or failed) run into DIR finished",
    )
    add_strict_option(parser)
    parser.add_argument(
        "--num-steps", type=int, metavar="K", help="network iterations (default: as trained)"
    )
    parser.add_argument(
        "--refine-steps", type=int, metavar="N", help="instance-optimisation steps (default 0)"
    )
    add_affine_option(parser)
    add_precision_option(parser)
    add_compile_option(parser)
    add_device_option(parser)
    add_threads_option(parser)
    parser.add_argument("--max-time", type=float, metavar="S", help="wall-clock limit per pair")
    add_config_options(parser)
    parser.set_defaults(func=_run)
    _collect_trailing_overrides(parser)


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.evaluate import evaluate_pairs, format_summary_table

    if args.checkpoint is not None and (args.preset is not None or args.print_config):
        flag = "--preset" if args.preset is not None else "--print-config"
        raise CLIError(f"{flag} applies to --model (a pairwise optimiser), not to --checkpoint")
    overrides = with_preset(args.preset, list(args.overrides))
    if args.print_config:
        keys = ("model", "max_time", "device", "threads")  # as evaluate_pairs' --model run
        return print_config(args.config, overrides, {k: getattr(args, k) for k in keys})
    for flag, value in (("--pairs PAIRS.csv", args.pairs), ("--out DIR", args.out)):
        if value is None:
            raise CLIError(f"{flag} is required")
    try:
        evaluation = evaluate_pairs(
            args.pairs,
            args.out,
            checkpoint=args.checkpoint,
            model=args.model,
            num_steps=args.num_steps,
            refine_steps=args.refine_steps,
            affine=args.affine,
            network_precision=args.network_precision,
            compile_shooting=args.compile_shooting,
            device=args.device,
            max_time=args.max_time,
            config=args.config,
            overrides=overrides,
            progress=True,
            threads=args.threads,
            resume=args.resume,
        )
    except ValueError as exc:
        raise user_error(exc) from exc
    print(format_summary_table(evaluation.summary))
    print(f"\nwrote {args.out}/results.csv and {args.out}/summary.json")
    return _exit_status(evaluation.summary, args.strict)


def _exit_status(summary: dict, strict: bool) -> int:
    """0, or :data:`~rdmm_lightning.cli.register.INCOMPLETE` after a WARNING line: pairs whose
    deformable stage ran 0 iterations, or (``strict``) pairs that stopped early."""
    flagged = [("ran 0 deformable iterations (their outputs are affine only)", "incomplete")]
    if strict:
        flagged.append(("stopped early (--strict)", "stopped_early"))
    code = 0
    for what, key in flagged:
        if summary.get(key):
            which = ("pair " if len(summary[key]) == 1 else "pairs ") + ", ".join(
                str(i) for i in summary[key]
            )
            print(f"rdmm evaluate: WARNING: {which} {what}", file=sys.stderr, flush=True)
            code = INCOMPLETE
    return code
