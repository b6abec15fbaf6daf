"""``rdmm register``: pairwise numerical registration of two image files.

``rdmm register SOURCE TARGET --out DIR [--model affine|svf|lddmm|rdmm] [--source-label F]
[--target-label F] [--similarity lncc|mk-lncc|ncc|ssd|mi] [--regularizer optimized|predefined
--region-mask F] [--max-time S] [--strict] [--preset NAME] [--config F] [--print-config]
[--device auto|cpu|cuda[:N]] [--threads N] [key=value ...]``; ANTs' names work too: ``--moving
SOURCE --fixed TARGET`` (moving = source, fixed = target; :func:`add_image_arguments`, shared
with ``rdmm infer``).

``--max-time`` bounds the whole command, from the start of ``rdmm``'s ``main`` to the last
file written. Exit codes: 0 done; 2 a user error (one line, nothing written); 3 (:data:`INCOMPLETE`)
the deformable stage ran 0 iterations, so the outputs are the affine registration only (a
``WARNING`` line says so; ``metrics.json`` has ``"complete": false``), or, with ``--strict``,
any stage stopped early (time limit, non-finite values): :func:`exit_status`.

Writes the output files (docs/architecture.md) into ``DIR`` (all or nothing). Options are
resolved as defaults < ``--preset`` < ``--config`` YAML < flags < ``key=value`` overrides (see
:mod:`rdmm_lightning.pipeline.config` for the keys; ``--preset NAME`` is the option ``preset``,
passed as the first override ``preset=NAME``); the work is
:func:`rdmm_lightning.pipeline.run.register_files`. ``--print-config`` prints the resolved options
as YAML and exits 0 without reading an image or writing anything (:func:`print_config`).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rdmm_lightning.cli.main import CLIError, add_device_option, add_threads_option, user_error
from rdmm_lightning.options import Model, Preset, Regularizer, Similarity, values

__all__ = [
    "INCOMPLETE",
    "add_config_options",
    "add_image_arguments",
    "add_parser",
    "add_strict_option",
    "exit_status",
    "image_arguments",
    "print_config",
    "with_preset",
]

INCOMPLETE = 3
"""Exit code of a registration that did not do what was asked (see the module docstring)."""

EPILOG = """\
key=value overrides (OmegaConf dot-list syntax), for example:
  iterations=[30,20,10] scales=[0.25,0.5,1.0] sigmas=[0.02,0.04,0.06,0.08] energy_weight=0.5
  solver.num_steps=20 similarity_kwargs.window=7 affine=false affine_options.iterations=50
  spacing_mode=physical working_shape=[96,96,96] region.inside=[0.1,0.4,0.5,0]
Precedence: defaults < --preset < --config < flags < key=value. Unknown keys are errors."""


def _presets_help() -> str:
    """One line per preset: its name and the first line of its YAML file."""
    from rdmm_lightning.presets import preset_summary

    lines = ["presets (--preset NAME; settings in rdmm_lightning/presets/NAME.yaml):"]
    lines += [f"  {name:<10} {preset_summary(name)}" for name in values(Preset)]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``register`` parser."""
    parser = subparsers.add_parser(
        "register",
        usage="%(prog)s SOURCE TARGET --out DIR [options] [key=value ...]\n"
        "       %(prog)s --moving SOURCE --fixed TARGET --out DIR [options] [key=value ...]",
        help="register two images by numerical optimisation",
        description="Register SOURCE to TARGET (affine, then vSVF/LDDMM/RDMM) and write the "
        "warped images, ITK displacement fields and transforms (affine.mat, composite.h5), "
        "det J, sigma(x), metrics.json and overview.png into --out.",
        epilog=f"{_presets_help()}\n\n{EPILOG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_image_arguments(parser, overrides=True)
    parser.add_argument("--out", metavar="DIR", help="output folder (required)")
    parser.add_argument("--model", choices=values(Model), help="default rdmm")
    parser.add_argument("--source-label", metavar="F", help="source label map (for Dice)")
    parser.add_argument("--target-label", metavar="F", help="target label map (for Dice)")
    parser.add_argument("--similarity", choices=values(Similarity), help="default lncc")
    parser.add_argument(
        "--regularizer",
        choices=values(Regularizer),
        help="RDMM: optimised pre-weights (default) or predefined from --region-mask",
    )
    parser.add_argument("--region-mask", metavar="F", help="RDMM region mask in the source's space")
    parser.add_argument(
        "--max-time",
        type=float,
        metavar="S",
        help="wall-clock limit (s) of the whole command, split across stages and scales",
    )
    add_strict_option(parser)
    add_config_options(parser)
    add_device_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=_run)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--preset NAME``, ``--config F`` and ``--print-config`` (``args.preset``, ``args.config``,
    ``args.print_config``); the preset name is checked with the other options
    (:func:`with_preset`), so that a wrong one is a one-line error."""
    parser.add_argument(
        "--preset",
        metavar="|".join(values(Preset)),
        help="named settings for an anatomy (`rdmm register --help` lists them); --config, "
        "flags and key=value override them",
    )
    parser.add_argument("--config", metavar="F", help="YAML file of options")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved options as YAML and exit (reads no image, writes nothing)",
    )


def with_preset(preset: str | None, overrides: list[str]) -> list[str]:
    """The ``key=value`` overrides with ``--preset NAME`` first, as ``preset=NAME`` (a later
    ``preset=...`` wins, as key=value wins over flags)."""
    return overrides if preset is None else [f"preset={preset}", *overrides]


def print_config(config: str | None, overrides: list[str], explicit: dict) -> int:
    """``--print-config``: resolve the options as a registration would (every check included),
    print them as YAML on stdout; 0, or a one-line :class:`CLIError`."""
    from rdmm_lightning.pipeline.config import config_yaml, resolve_register_config

    try:
        cfg = resolve_register_config(config, overrides, explicit)
    except ValueError as exc:
        raise user_error(exc) from exc
    print(config_yaml(cfg), end="")
    return 0


def add_strict_option(parser: argparse.ArgumentParser) -> None:
    """``--strict`` (``args.strict``): exit code 3 whenever a registration stopped early."""
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with code 3 when a stage stopped early (time limit, non-finite values); "
        "without it only a deformable stage that ran 0 iterations does",
    )


def exit_status(metrics: dict, strict: bool, prog: str, name: str = "") -> int:
    """0, or :data:`INCOMPLETE` after a ``WARNING`` line on stderr: the deformable stage ran
    0 iterations (always), or (``strict``) the registration stopped early. ``name`` prefixes
    the warning (e.g. a pair)."""
    from rdmm_lightning.pipeline.run import incomplete_message

    message = incomplete_message(metrics)
    if message is None and strict and metrics.get("stopped"):
        message = f"stopped early (--strict): {metrics['stopped']}"
    if message is None:
        return 0
    print(f"{prog}: WARNING: {name}{message}", file=sys.stderr, flush=True)
    return INCOMPLETE


def add_image_arguments(parser: argparse.ArgumentParser, *, overrides: bool) -> None:
    """The pair's images: positional ``SOURCE TARGET`` (then ``key=value`` overrides when
    ``overrides``), or ANTs' ``--moving SOURCE --fixed TARGET``; read them back with
    :func:`image_arguments`. Positional words may also follow the options."""
    more = " [key=value ...]" if overrides else ""
    parser.add_argument(
        "words",
        nargs="*",
        metavar="SOURCE TARGET" + more,
        help="moving (source) and fixed (target) image" + (", then option overrides" * overrides),
    )
    parser.add_argument("--moving", metavar="F", help="moving image, as in ANTs (= SOURCE)")
    parser.add_argument("--fixed", metavar="F", help="fixed image, as in ANTs (= TARGET)")
    _collect_trailing_overrides(parser, dest="words")


def image_arguments(args: argparse.Namespace, *, overrides: bool) -> tuple[str, str, list[str]]:
    """``(source, target, overrides)`` from :func:`add_image_arguments`' options: ``SOURCE
    TARGET`` or ``--moving``/``--fixed`` (moving = source, fixed = target), never both.

    Raises:
        CLIError: a missing image, an image given both ways, or (without ``overrides``) an
            extra word.
    """
    words = list(args.words)
    if args.moving is None and args.fixed is None:
        if len(words) < 2:
            missing = "TARGET" if words else "SOURCE and TARGET"
            raise CLIError(f"missing {missing} (or give --moving and --fixed)")
        if len(words) > 2 and not overrides:
            raise CLIError(f"unexpected argument {words[2]!r} after SOURCE TARGET")
        return words[0], words[1], words[2:]
    images = [w for w in words if "=" not in w] if overrides else words
    if images:
        flags = " and ".join(
            f for f, v in (("--moving", args.moving), ("--fixed", args.fixed)) if v is not None
        )
        raise CLIError(
            f"give the images either as SOURCE TARGET or as --moving/--fixed, not both "
            f"(got {images[0]!r} and {flags})"
        )
    if args.moving is None or args.fixed is None:
        raise CLIError(f"{'--fixed' if args.fixed is None else '--moving'} is missing")
    return args.moving, args.fixed, words


def _collect_trailing_overrides(parser: argparse.ArgumentParser, dest: str = "overrides") -> None:
    """Let ``key=value`` items follow the options (``SOURCE TARGET --out DIR k=v``).

    argparse fills all positionals from the first run of them, so later ``key=value`` items
    would be "unrecognized arguments". This parser's ``parse_known_args`` (which the ``rdmm``
    parser calls for the sub-command) moves such items (any leftover word not starting with
    ``-``) into the positional list ``dest``, where a word without ``=`` gets a one-line error.
    """
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = parse(args, namespace)
        moved = [e for e in extras if not e.startswith("-")]  # checked as key=value later
        setattr(ns, dest, list(getattr(ns, dest, None) or []) + moved)
        return ns, [e for e in extras if e not in moved]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _flags(args: argparse.Namespace) -> dict:
    """The options the flags set (None: not given), keyed as in the config."""
    keys = ("model", "similarity", "regularizer", "region_mask", "max_time", "device", "threads")
    return {key: getattr(args, key) for key in keys}


def _override_words(args: argparse.Namespace) -> list[str]:
    """``--print-config``: the ``key=value`` words, after the images if any are given."""
    words = list(args.words)
    if args.moving is None and args.fixed is None:
        images = 0
        while images < min(2, len(words)) and "=" not in words[images]:
            images += 1
        words = words[images:]
    return words


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.run import IncompleteRegistration, register_files

    if args.print_config:
        return print_config(
            args.config, with_preset(args.preset, _override_words(args)), _flags(args)
        )
    source, target, overrides = image_arguments(args, overrides=True)
    if args.out is None:
        raise CLIError("--out DIR is required (the output folder)")
    try:
        with warnings.catch_warnings():  # said once, below, as a WARNING line
            warnings.simplefilter("ignore", IncompleteRegistration)
            metrics = register_files(
                source,
                target,
                args.out,
                source_label=args.source_label,
                target_label=args.target_label,
                config=args.config,
                overrides=with_preset(args.preset, overrides),
                progress=True,
                started=getattr(args, "started", None),
                **_flags(args),
            )
    except ValueError as exc:
        raise user_error(exc) from exc
    print(_summary(args.out, metrics))
    return exit_status(metrics, args.strict, "rdmm register")


def _summary(out: str, metrics: dict) -> str:
    parts = [f"{metrics['model']}", f"{metrics['time_s']:.1f} s"]
    dice = metrics.get("dice")
    if dice and dice.get("mean") is not None:
        parts.append(f"mean Dice {dice['mean']:.4f}")
    parts.append(f"det J <= 0 at {metrics['negative_jacobian_voxels']} voxels")
    if metrics.get("stopped"):
        parts.append(f"stopped early: {metrics['stopped']}")
    return f"wrote {out} ({', '.join(parts)})"
