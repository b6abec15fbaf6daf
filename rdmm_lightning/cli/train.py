"""``rdmm train [--threads N] [HYDRA OPTIONS] [OVERRIDE ...]``: train a network; the same Hydra
app as ``python train.py`` (:func:`rdmm_lightning.training.app.main`).

Overrides use Hydra's grammar (``experiment=oai_rdmm_net``, ``trainer.max_epochs=20``,
``logger=[csv,wandb]``, ``ckpt_path=RUN/last.ckpt``); see ``configs/train.yaml``. Hydra's options
(``--cfg job``, ``-m``, ``--info``, ...) are passed on as given. Threads: see
:func:`rdmm_lightning.runtime.apply_process_threads`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rdmm_lightning.cli.main import add_threads_option

__all__ = ["add_parser"]


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
        "  rdmm train -m model.omt_weight=0.05,0.1      # a sweep: one run per value",
        "  rdmm train --cfg job experiment=ixi_rdmm_net # the composed config, no training",
        "  rdmm train hydra.run.dir=runs/try1           # this run's folder",
    ]
    return "\n".join(lines)


class _LazyEpilog(argparse.ArgumentParser):
    """Mixed into the ``train`` parser's class: its epilog (config groups, read from the packaged
    configs) is built when help is shown, so other ``rdmm`` commands do not import the training
    stack."""

    def format_help(self) -> str:
        if self.epilog is None:
            self.epilog = _epilog()
        return super().format_help()


class _Forward(argparse.Action):
    """Collects Hydra's options and the overrides, in command-line order, in ``args.forward``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[str] | None,
        option_string: str | None = None,
    ) -> None:
        forward = list(getattr(namespace, "forward", None) or [])
        if option_string is not None:
            forward.append(option_string)
        if isinstance(values, str):
            forward.append(values)
        elif values is not None:
            forward.extend(values)
        namespace.forward = forward


def _add_hydra_options(parser: argparse.ArgumentParser) -> None:
    """Hydra's command-line options, passed on to the app unchanged (``--cfg`` alone is
    ``--cfg job``)."""
    from rdmm_lightning.training.hydra_args import hydra_options

    for flags, nargs in hydra_options():
        if "--cfg" in flags:
            nargs = "?"
        kwargs: dict[str, Any] = {"nargs": nargs, "action": _Forward, "default": argparse.SUPPRESS}
        if nargs == 0:
            kwargs["help"] = argparse.SUPPRESS
        else:
            kwargs.update(metavar="VALUE", help=argparse.SUPPRESS)
        parser.add_argument(*flags, **kwargs)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="train a registration network (Hydra overrides, as python train.py)",
        description="Train a registration network: the Hydra app of python train.py, with its\n"
        "options -m/--multirun (sweeps), --cfg job|hydra|all [--resolve], --info, --hydra-help.\n"
        "Without overrides: the quickstart experiment (a short RDMM-net training on the\n"
        "built-in synthetic 2D shapes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # the epilog needs the packaged configs: built when help is shown, not for every command
    parser.__class__ = type("LazyEpilogParser", (_LazyEpilog, type(parser)), {})
    add_threads_option(parser)
    _add_hydra_options(parser)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        action=_Forward,
        default=argparse.SUPPRESS,
        help="group=option or key=value",
    )
    parser.set_defaults(func=_run, forward=[])


def _run(args: argparse.Namespace) -> int:
    from rdmm_lightning.training.app import main

    relaunch = [sys.argv[0], "train"]  # what DDP sub-processes run (rdmm train OVERRIDES)
    return main(args.forward, prog="rdmm train", threads=args.threads, relaunch=relaunch)
