"""``rdmm infer``: register two image files with a trained network checkpoint.

``rdmm infer --checkpoint CKPT SOURCE TARGET --out DIR [--source-label F] [--target-label F]
[--num-steps K] [--refine-steps N] [--device auto|cpu|cuda[:N]] [--threads N]``

The pair is read and the source resampled into the target's physical space on the checkpoint's
training grid (the target's grid through the training preprocessing recorded in the checkpoint,
e.g. reoriented to RAS+ and resized; :func:`rdmm_lightning.pipeline.network.register_with_network`),
the network predicts the maps (K refinement steps, optionally N
steps of instance optimisation), and the files of architecture.md are written on the source's
and target's own grids (:func:`rdmm_lightning.pipeline.write_registration_outputs`). Inputs of
any shape, spacing and orientation are accepted.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rdmm_lightning.cli.main import CLIError, add_device_option, add_threads_option

__all__ = ["register", "infer_files"]

DESCRIPTION = """\
Register SOURCE to TARGET with a trained affine/vSVF/LDDMM/RDMM network checkpoint and write the
warped images, ITK displacement fields, det J, sigma(x) (RDMM), metrics.json and overview.png
into --out. Inputs are resampled to the checkpoint's training grid inside; outputs lie on the
source's and target's own grids."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``infer`` parser."""
    parser = subparsers.add_parser(
        "infer",
        help="register two images with a trained network",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="model checkpoint")
    parser.add_argument("source", metavar="SOURCE", help="moving image")
    parser.add_argument("target", metavar="TARGET", help="fixed image")
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
    add_device_option(parser)
    add_threads_option(parser)
    parser.set_defaults(func=_run)


def _check_args(
    num_steps: int | None, refine_steps: int, device: str | None, threads: int | None
) -> Any:
    """One-line errors for bad options; returns the torch device."""
    from rdmm_lightning.runtime import requested_threads, resolve_device

    if num_steps is not None and num_steps < 1:
        raise CLIError(f"--num-steps must be >= 1; got {num_steps}")
    if refine_steps < 0:
        raise CLIError(f"--refine-steps must be >= 0; got {refine_steps}")
    try:
        requested_threads(threads)
        return resolve_device(device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def infer_files(
    checkpoint: str | os.PathLike,
    source: str | os.PathLike,
    target: str | os.PathLike,
    out: str | os.PathLike,
    *,
    source_label: str | os.PathLike | None = None,
    target_label: str | os.PathLike | None = None,
    num_steps: int | None = None,
    refine_steps: int = 0,
    device: str | None = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """``rdmm infer`` as a function; returns the metrics written to ``metrics.json``.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda[:N]"``;
    ``threads``: intra-op threads of the network step (None: ``RDMM_NUM_THREADS``, else chosen
    for the checkpoint's grid, :func:`rdmm_lightning.runtime.choose_num_threads`).

    Raises:
        CLIError: one line for every user error (checkpoint, inputs, options).
    """
    from rdmm_lightning.models import CheckpointError, load_registration_checkpoint
    from rdmm_lightning.pipeline import write_registration_outputs
    from rdmm_lightning.pipeline.network import register_with_network

    dev = _check_args(num_steps, refine_steps, device, threads)
    try:
        module = load_registration_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise CLIError(_one_line(exc)) from exc
    if module.model_name == "affine" and refine_steps:
        raise CLIError("--refine-steps applies to svf/lddmm/rdmm checkpoints, not affine")
    try:
        module = module.to(dev)
        pair, result = register_with_network(
            module,
            source,
            target,
            source_label=source_label,
            target_label=target_label,
            num_steps=num_steps,
            refine_steps=refine_steps,
            name=os.fspath(checkpoint),
            threads=threads,
        )
        config = {
            "checkpoint": os.fspath(checkpoint),
            "num_steps": result.extras.get("num_steps"),
            "refine_steps": refine_steps,
            "device": str(dev),
            "threads": threads,
            "hparams": dict(module.hparams),
        }
        return write_registration_outputs(out, pair, result, config=config)
    except ValueError as exc:
        raise CLIError(_one_line(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    metrics = infer_files(
        args.checkpoint,
        args.source,
        args.target,
        args.out,
        source_label=args.source_label,
        target_label=args.target_label,
        num_steps=args.num_steps,
        refine_steps=args.refine_steps,
        device=args.device,
        threads=args.threads,
    )
    parts = [metrics["model"], f"{metrics['time_s'] * 1000:.0f} ms"]
    dice = metrics.get("dice")
    if dice and dice.get("mean") is not None:
        parts.append(f"mean Dice {dice['mean']:.4f}")
    parts.append(f"det J <= 0 at {metrics['negative_jacobian_voxels']} voxels")
    print(f"wrote {args.out} ({', '.join(parts)})")
    return 0
