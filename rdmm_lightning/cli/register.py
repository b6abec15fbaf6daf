"""``rdmm register``: pairwise numerical registration of two image files.

``rdmm register SOURCE TARGET --out DIR [--model affine|svf|lddmm|rdmm] [--source-label F]
[--target-label F] [--similarity lncc|mk-lncc|ncc|ssd|mi] [--regularizer optimized|predefined
--region-mask F] [--max-time S] [--config F] [--device auto|cpu|cuda[:N]] [--threads N]
[key=value ...]``

Writes the files of architecture.md into ``DIR`` (all or nothing). Options are resolved as
defaults < ``--config`` YAML < flags < ``key=value`` overrides (see
:mod:`rdmm_lightning.pipeline.config` for the keys).
"""

from __future__ import annotations

import argparse

from rdmm_lightning.cli.main import CLIError, add_device_option, add_threads_option

__all__ = ["register"]

MODELS = ("affine", "svf", "lddmm", "rdmm")
SIMILARITIES = ("lncc", "mk-lncc", "ncc", "ssd", "mi")

EPILOG = """\
key=value overrides (OmegaConf dot-list syntax), for example:
  iterations=[30,20,10] scales=[0.25,0.5,1.0] sigmas=[0.02,0.04,0.06,0.08] energy_weight=0.5
  solver.num_steps=20 similarity_kwargs.window=7 affine=false affine_options.iterations=50
  spacing_mode=physical working_shape=[96,96,96] region.inside=[0.1,0.4,0.5,0]
Precedence: defaults < --config < flags < key=value. Unknown keys are errors."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``register`` parser."""
    parser = subparsers.add_parser(
        "register",
        help="register two images by numerical optimisation",
        description="Register SOURCE to TARGET (affine, then vSVF/LDDMM/RDMM) and write the "
        "warped images, ITK displacement fields, det J, sigma(x), metrics.json and "
        "overview.png into --out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE", help="moving image")
    parser.add_argument("target", metavar="TARGET", help="fixed image")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="option overrides")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", choices=MODELS, help="default rdmm")
    parser.add_argument("--source-label", metavar="F", help="source label map (for Dice)")
    parser.add_argument("--target-label", metavar="F", help="target label map (for Dice)")
    parser.add_argument("--similarity", choices=SIMILARITIES, help="default lncc")
    parser.add_argument(
        "--regularizer",
        choices=("optimized", "predefined"),
        help="RDMM: optimised pre-weights (default) or predefined from --region-mask",
    )
    parser.add_argument("--region-mask", metavar="F", help="RDMM region mask in the source's space")
    parser.add_argument("--max-time", type=float, metavar="S", help="wall-clock limit (s)")
    parser.add_argument("--config", metavar="F", help="YAML file of options")
    add_device_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=_run)
    _collect_trailing_overrides(parser)


def _collect_trailing_overrides(parser: argparse.ArgumentParser) -> None:
    """Let ``key=value`` items follow the options (``SOURCE TARGET --out DIR k=v``).

    argparse fills all positionals from the first run of them, so later ``key=value`` items
    would be "unrecognized arguments". This parser's ``parse_known_args`` (which the ``rdmm``
    parser calls for the sub-command) moves such items (any leftover word not starting with
    ``-``) into ``overrides``, where a word without ``=`` gets a one-line error.
    """
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = parse(args, namespace)
        moved = [e for e in extras if not e.startswith("-")]  # checked as key=value later
        ns.overrides = list(getattr(ns, "overrides", None) or []) + moved
        return ns, [e for e in extras if e not in moved]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.register import register_files

    if args.max_time is not None and not args.max_time > 0:
        raise CLIError(f"--max-time must be > 0; got {args.max_time}")
    try:
        metrics = register_files(
            args.source,
            args.target,
            args.out,
            model=args.model,
            source_label=args.source_label,
            target_label=args.target_label,
            similarity=args.similarity,
            regularizer=args.regularizer,
            region_mask=args.region_mask,
            max_time=args.max_time,
            device=args.device,
            threads=args.threads,
            config=args.config,
            overrides=args.overrides,
            progress=True,
        )
    except ValueError as exc:
        raise CLIError(" ".join(str(exc).split())) from exc
    print(_summary(args.out, metrics))
    return 0


def _summary(out: str, metrics: dict) -> str:
    parts = [f"{metrics['model']}", f"{metrics['time_s']:.1f} s"]
    dice = metrics.get("dice")
    if dice and dice.get("mean") is not None:
        parts.append(f"mean Dice {dice['mean']:.4f}")
    parts.append(f"det J <= 0 at {metrics['negative_jacobian_voxels']} voxels")
    if metrics.get("stopped"):
        parts.append(f"stopped early: {metrics['stopped']}")
    return f"wrote {out} ({', '.join(parts)})"
