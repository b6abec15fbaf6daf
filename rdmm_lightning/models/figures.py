"""Sending a validation figure to whatever logger the trainer has.

* wandb (:class:`~pytorch_lightning.loggers.WandbLogger`): ``logger.log_image``;
* TensorBoard: ``experiment.add_image`` (HWC uint8);
* anything else (CSV, no logger): a PNG under ``<log dir>/figures/``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl
from matplotlib.figure import Figure

from ..viz import figure_to_array, save_figure

__all__ = ["log_figure", "figure_dir"]

log = logging.getLogger(__name__)


def figure_dir(trainer: pl.Trainer) -> Path:
    """``<log dir>/figures``: the first logger's ``log_dir`` (or ``save_dir``), else the
    trainer's ``default_root_dir``."""
    base = None
    for logger in trainer.loggers:
        base = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if base:
            break
    return Path(os.fspath(base or trainer.default_root_dir)) / "figures"


def log_figure(trainer: pl.Trainer, fig: Figure, tag: str, step: int, epoch: int) -> list[str]:
    """Log ``fig`` under ``tag`` to every logger; returns where it went (for tests and logs).

    Figure failures are logged as warnings, never raised (a plot must not stop training).
    """
    sent: list[str] = []
    loggers = list(trainer.loggers)
    for logger in loggers:
        kind = type(logger).__name__
        try:
            if kind == "WandbLogger":
                logger.log_image(key=tag, images=[figure_to_array(fig)], step=step)
                sent.append("wandb")
            elif kind == "TensorBoardLogger":
                logger.experiment.add_image(tag, figure_to_array(fig), step, dataformats="HWC")
                sent.append("tensorboard")
        except Exception as exc:  # noqa: BLE001 - plotting must not stop training
            log.warning("could not log figure %s to %s: %s", tag, kind, exc)
    if not sent:
        name = tag.replace("/", "_") + f"_epoch{epoch:04d}.png"
        try:
            sent.append(save_figure(fig, figure_dir(trainer) / name))
        except OSError as exc:
            log.warning("could not save figure %s: %s", name, exc)
    return sent
