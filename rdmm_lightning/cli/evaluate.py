"""``rdmm evaluate``: register every pair of a CSV file and summarise Dice, folds and time.

``rdmm evaluate (--checkpoint CKPT | --model NAME) --pairs PAIRS.csv --out DIR [--num-steps K]
[--refine-steps N] [--device auto|cpu|cuda[:N]] [--threads N] [--max-time S] [--config F]
[key=value ...]``

A thin layer over :func:`rdmm_lightning.pipeline.evaluate.evaluate_pairs`: each pair is
registered as ``rdmm infer`` (``--checkpoint``) or ``rdmm register`` (``--model``) would, into
``DIR/pair_XXX/``; then ``DIR/results.csv`` and ``DIR/summary.json`` are written and a markdown
table of the means is printed.
"""

from __future__ import annotations

import argparse

from rdmm_lightning.cli.main import CLIError, add_device_option, add_threads_option
from rdmm_lightning.cli.register import MODELS, _collect_trailing_overrides

__all__ = ["register"]

DESCRIPTION = """\
Register every pair of PAIRS.csv (columns source,target[,source_label,target_label]; relative
paths are relative to the CSV's folder) with a trained network (--checkpoint, as `rdmm infer`)
or a pairwise optimiser (--model, as `rdmm register`). Writes each pair's outputs into
DIR/pair_001, DIR/pair_002, ..., then DIR/results.csv (one row per pair: Dice, det J <= 0, folds,
time) and DIR/summary.json (mean and std over the pairs, model, resolved options)."""

EPILOG = """\
--model only: --max-time (per pair), --config and key=value overrides as for `rdmm register`,
  e.g. iterations=[30,20,10] scales=[0.25,0.5,1.0] similarity=ncc solver.num_steps=20
--checkpoint only: --num-steps, --refine-steps as for `rdmm infer`."""


def register(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--model", metavar="NAME", help=f"pairwise optimiser: {'|'.join(MODELS)}")
    parser.add_argument("--pairs", required=True, metavar="PAIRS.csv", help="CSV of pairs")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--num-steps", type=int, metavar="K", help="network iterations (default: as trained)"
    )
    parser.add_argument(
        "--refine-steps", type=int, metavar="N", help="instance-optimisation steps (default 0)"
    )
    add_device_option(parser)
    add_threads_option(parser)
    parser.add_argument("--max-time", type=float, metavar="S", help="wall-clock limit per pair")
    parser.add_argument("--config", metavar="F", help="YAML file of options")
    parser.set_defaults(func=_run)
    _collect_trailing_overrides(parser)


def _check_args(args: argparse.Namespace) -> None:
    """Option combinations, named as on the command line."""
    if (args.checkpoint is None) == (args.model is None):
        given = "both" if args.checkpoint is not None else "neither"
        raise CLIError(f"give exactly one of --checkpoint and --model (got {given})")
    if args.model is not None and args.model not in MODELS:
        raise CLIError(f"--model {args.model!r}: unknown model; use one of {', '.join(MODELS)}")
    if args.checkpoint is not None:
        wrong = [
            flag
            for flag, value in (
                ("--max-time", args.max_time),
                ("--config", args.config),
                ("key=value", args.overrides or None),
            )
            if value is not None
        ]
        if wrong:
            raise CLIError(f"{', '.join(wrong)}: for --model only, not with --checkpoint")
    else:
        wrong = [
            flag
            for flag, value in (
                ("--num-steps", args.num_steps),
                ("--refine-steps", args.refine_steps),
            )
            if value is not None
        ]
        if wrong:
            raise CLIError(f"{', '.join(wrong)}: for --checkpoint only, not with --model")
    if args.num_steps is not None and args.num_steps < 1:
        raise CLIError(f"--num-steps must be >= 1; got {args.num_steps}")
    if args.refine_steps is not None and args.refine_steps < 0:
        raise CLIError(f"--refine-steps must be >= 0; got {args.refine_steps}")
    if args.max_time is not None and not args.max_time > 0:
        raise CLIError(f"--max-time must be > 0; got {args.max_time}")


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.evaluate import evaluate_pairs, format_summary_table

    _check_args(args)
    try:
        evaluation = evaluate_pairs(
            args.pairs,
            args.out,
            checkpoint=args.checkpoint,
            model=args.model,
            num_steps=args.num_steps,
            refine_steps=args.refine_steps or 0,
            device=args.device,
            max_time=args.max_time,
            config=args.config,
            overrides=args.overrides,
            progress=True,
            threads=args.threads,
        )
    except ValueError as exc:
        raise CLIError(" ".join(str(exc).split())) from exc
    print(format_summary_table(evaluation.summary))
    print(f"\nwrote {args.out}/results.csv and {args.out}/summary.json")
    return 0
