"""Callbacks every training run gets: the config in each checkpoint, per-step seeds (so resumed
runs draw the same random numbers), and the best/last checkpoints of the run folder; and
:class:`ElapsedTime` (in ``configs/callbacks/default.yaml``), the training wall time in the logs
so that learning curves can be drawn against time as well as steps."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from .compose import CONFIG_KEY, OVERRIDES_KEY
from .schema import CheckpointConfig

__all__ = [
    "BestCheckpoint",
    "ConfigSnapshot",
    "ElapsedTime",
    "StepSeeds",
    "checkpoint_callbacks",
]


class ElapsedTime(Callback):
    """Logs ``time/elapsed_min``: wall minutes of training (validation included) since the run
    started, summed over resumed sessions (kept in the checkpoint), at the end of every training
    and validation epoch."""

    def __init__(self) -> None:
        self.before = 0.0  # minutes of earlier sessions (from a resumed checkpoint)
        self.started: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def minutes(self) -> float:
        """Minutes of training so far, this session included."""
        now = 0.0 if self.started is None else (time.perf_counter() - self.started) / 60.0
        return self.before + now

    def _log(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            logger.log_metrics({"time/elapsed_min": self.minutes()}, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"minutes": self.minutes()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("minutes", 0.0))


class ConfigSnapshot(Callback):
    """Stores the resolved config and the overrides in every checkpoint
    (``checkpoint["rdmm_config"]``, ``checkpoint["rdmm_overrides"]``) and sends the config to
    the loggers (as the hyper-parameter ``config``: wandb run config, CSV/TensorBoard hparams)."""

    def __init__(self, config: dict[str, Any], overrides: Sequence[str]) -> None:
        self.config = config
        self.overrides = [str(o) for o in overrides]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": self.config})

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[OVERRIDES_KEY] = list(self.overrides)


class StepSeeds(Callback):
    """Re-seeds torch (CPU and CUDA), numpy and ``random`` before every training batch from
    ``(seed, epoch, batch index, rank)``.

    The random numbers a training step draws (dropout, random initial states, augmentation in
    the main process) then depend on where the step is, not on what ran before it. A run resumed
    from ``last.ckpt`` therefore draws exactly what the uninterrupted run drew, although a fresh
    process consumes the global generator differently before its first batch (Lightning creates
    the data iterator at another point, TorchIO transforms draw while loading). Put it before
    other callbacks that draw in ``on_train_batch_start``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        key = [self.seed, trainer.current_epoch, batch_idx, trainer.global_rank]
        value = int(np.random.SeedSequence(key).generate_state(1)[0])
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt``: the epoch with the best validation metric.

    With ``monitor="auto"`` the metric is chosen in ``setup``, when the data is known: Dice
    (``dice_key``, maximised) when the validation pairs have labels, the loss (``loss_key``,
    minimised) when they have none; without validation pairs nothing is saved.
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = "auto",
        mode: str = "auto",
        dice_key: str = "val/dice",
        loss_key: str = "val/loss",
    ) -> None:
        self._auto_monitor, self._auto_mode = monitor == "auto", mode == "auto"
        self.dice_key, self.loss_key = dice_key, loss_key
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=None if self._auto_monitor else monitor,
            mode="min" if self._auto_mode else mode,
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        if not self._auto_monitor and self._auto_mode:
            self._set_monitor(monitor, "max" if monitor == dice_key else "min")

    def _set_monitor(self, monitor: str | None, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.kth_value = torch.tensor(torch.inf if mode == "min" else -torch.inf)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._auto_monitor:
            val_set = getattr(trainer.datamodule, "val_set", None)
            if val_set is None or trainer.limit_val_batches == 0:
                self.save_top_k = 0  # no validation: only last.ckpt
            elif getattr(val_set, "labels", False):
                self._set_monitor(self.dice_key, "max" if self._auto_mode else self.mode)
            else:
                self._set_monitor(self.loss_key, "min" if self._auto_mode else self.mode)
        super().setup(trainer, pl_module, stage)


def checkpoint_callbacks(run_dir: Path, options: CheckpointConfig) -> list[ModelCheckpoint]:
    """``best.ckpt`` (first, so ``trainer.checkpoint_callback`` is the best one) and
    ``last.ckpt`` (after every ``every_n_epochs`` epochs, validation included; resuming from it
    continues with the next epoch exactly as an uninterrupted run would)."""
    callbacks: list[ModelCheckpoint] = [
        BestCheckpoint(run_dir, options.monitor, options.mode, options.dice_key, options.loss_key)
    ]
    if options.save_last:
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir,
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=options.every_n_epochs,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            )
        )
    return callbacks
