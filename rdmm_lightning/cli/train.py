"""``rdmm train [--cfg] [--threads N] [OVERRIDE ...]``: train a network, the same as
``python train.py``.

Overrides use Hydra's grammar (``experiment=oai_rdmm_net``, ``trainer.max_epochs=20``,
``logger=[csv,wandb]``, ``ckpt_path=RUN/last.ckpt``); see ``configs/train.yaml``. Threads: see
:func:`rdmm_lightning.runtime.apply_process_threads`.
"""

from __future__ import annotations

import argparse

from rdmm_lightning.cli.main import CLIError, add_threads_option

__all__ = ["register"]


def _epilog() -> str:
    from rdmm_lightning.training.compose import GROUPS, group_options

    lines = ["config groups (group=option):"]
    lines += [f"  {g:<11}{' '.join(group_options(g))}" for g in GROUPS]
    lines += [
        "",
        "examples:",
        "  rdmm train                                   # quickstart: RDMM-net on synthetic 2D",
        "  rdmm train experiment=oai_rdmm_net trainer=gpu model.affine_checkpoint=A.ckpt",
        "  rdmm train ckpt_path=checkpoints/quickstart/DATE/last.ckpt trainer.max_epochs=20",
        "  rdmm train init_from=B.ckpt experiment=ixi_rdmm_net   # fine-tune from weights",
        "  rdmm train trainer=ddp trainer.devices=4 logger=wandb",
    ]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="train a registration network (Hydra overrides, as python train.py)",
        description="Train a registration network. Without overrides: the quickstart "
        "experiment (a short RDMM-net training on the built-in synthetic 2D shapes).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    add_threads_option(parser)
    parser.add_argument(
        "overrides", nargs="*", metavar="OVERRIDE", help="group=option or key=value"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from rdmm_lightning.runtime import apply_process_threads
    from rdmm_lightning.training import (
        TrainingConfigError,
        check_config,
        compose_train_config,
        run_training,
    )

    try:
        composed = compose_train_config(args.overrides)
        if args.cfg:
            check_config(composed.cfg)
            print(OmegaConf.to_yaml(composed.cfg))
            return 0
        apply_process_threads(args.threads)
        run_training(composed)
    except TrainingConfigError as exc:
        raise CLIError(str(exc)) from None
    return 0
