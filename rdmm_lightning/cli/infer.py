"""``rdmm infer``: register two image files with a trained network checkpoint.

``rdmm infer --checkpoint CKPT SOURCE TARGET --out DIR [--source-label F] [--target-label F]
[--num-steps K] [--refine-steps N] [--affine net|opt|none] [--network-precision
auto|float32|bfloat16] [--compile-shooting] [--device auto|cpu|cuda[:N]] [--threads N]``;
ANTs' names work too: ``--moving SOURCE --fixed TARGET``.

The work is :func:`rdmm_lightning.pipeline.run.infer_files`: both images go through the
preprocessing recorded in the checkpoint (e.g. reoriented to RAS+, resized, intensities rescaled
between percentiles, as the data module did in training) and the source is resampled into the
target's physical space on that grid; the network predicts the maps (K refinement steps,
optionally N steps of instance optimisation) after the affine stage (``--affine``: the
checkpoint's affine net, the default when it has one; ``opt``: affine-opt on the pair with
``rdmm register``'s affine options, the network starting from its map; ``none``), and the
output files (docs/architecture.md) are written on the source's and target's own grids. Inputs
of any shape, spacing and orientation are accepted.
"""

from __future__ import annotations

import argparse

from rdmm_lightning.cli.main import add_device_option, add_threads_option, user_error
from rdmm_lightning.cli.register import add_image_arguments, image_arguments
from rdmm_lightning.options import AffineStage, InferencePrecision, values

__all__ = ["add_parser"]

DESCRIPTION = """\
Register SOURCE to TARGET with a trained affine/vSVF/LDDMM/RDMM network checkpoint and write the
warped images, ITK displacement fields and transforms (affine.mat, composite.h5), det J,
sigma(x) (RDMM), metrics.json and overview.png into --out. Inputs are resampled to the
checkpoint's training grid inside; outputs lie on the source's and target's own grids."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``infer`` parser."""
    parser = subparsers.add_parser(
        "infer",
        usage="%(prog)s --checkpoint CKPT SOURCE TARGET --out DIR [options]\n"
        "       %(prog)s --checkpoint CKPT --moving SOURCE --fixed TARGET --out DIR [options]",
        help="register two images with a trained network",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="model checkpoint")
    add_image_arguments(parser, overrides=False)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--source-label", metavar="F", help="source label map (for Dice)")
    parser.add_argument("--target-label", metavar="F", help="target label map (for Dice)")
    parser.add_argument(
        "--num-steps", type=int, metavar="K", help="network iterations (default: as trained)"
    )
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        metavar="N",
        help="instance-optimisation steps after the network (default 0; not for affine)",
    )
    add_affine_option(parser)
    add_precision_option(parser)
    add_compile_option(parser)
    add_device_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=_run)


def add_affine_option(parser: argparse.ArgumentParser) -> None:
    """``--affine net|opt|none`` (``args.affine``; None: ``net`` when the checkpoint has an
    affine stage, else ``none``)."""
    parser.add_argument(
        "--affine",
        choices=values(AffineStage),
        help="affine stage before a deformable network: the checkpoint's affine net (default "
        "when it has one), affine-opt on the pair (as rdmm register's), or none",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--network-precision auto|float32|bfloat16`` (``args.network_precision``)."""
    parser.add_argument(
        "--network-precision",
        choices=values(InferencePrecision),
        help="precision of the networks: as trained (auto, the default; float32 instead of "
        "bfloat16 on CPUs without AVX512-BF16/AMX and GPUs before Ampere), or forced",
    )


def add_compile_option(parser: argparse.ArgumentParser) -> None:
    """``--compile-shooting`` (``args.compile_shooting``: True, or None when not given)."""
    parser.add_argument(
        "--compile-shooting",
        action="store_const",
        const=True,
        help="shoot with the right-hand side through torch.compile: faster shooting and "
        "instance optimisation after tens of seconds of compiling (pays over many pairs or "
        "--refine-steps)",
    )


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.pipeline.run import infer_files

    source, target, _ = image_arguments(args, overrides=False)

    try:
        result = infer_files(
            args.checkpoint,
            source,
            target,
            args.out,
            source_label=args.source_label,
            target_label=args.target_label,
            num_steps=args.num_steps,
            refine_steps=args.refine_steps,
            device=args.device,
            threads=args.threads,
            affine=args.affine,
            network_precision=args.network_precision,
            compile_shooting=bool(args.compile_shooting),
        )
    except ValueError as exc:
        raise user_error(exc) from exc
    metrics = result.extras["metrics"]
    parts = [metrics["model"], f"{metrics['time_s'] * 1000:.0f} ms"]
    dice = metrics.get("dice")
    if dice and dice.get("mean") is not None:
        parts.append(f"mean Dice {dice['mean']:.4f}")
    parts.append(f"det J <= 0 at {metrics['negative_jacobian_voxels']} voxels")
    print(f"wrote {args.out} ({', '.join(parts)})")
    return 0
