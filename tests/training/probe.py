"""Callbacks that record what each process did, for the subprocess tests (DDP, kill + resume).

Added to a run with ``+callbacks.probe._target_=tests.training.probe.NAME`` and
``+callbacks.probe.out=DIR``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


def weight_sum(state: dict[str, torch.Tensor]) -> float:
    """A checksum of the floating-point tensors of a state dict."""
    return float(sum(v.double().sum() for v in state.values() if v.is_floating_point()))


class DDPProbe(Callback):
    """Writes ``rank<r>.json`` (pairs trained on, local losses of the last validation, logged
    metrics, world size) and ``rank<r>.pt`` (the flattened parameters at the end) into ``out``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.pairs: dict[int, list[list[str]]] = {}
        self.val_losses: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        pairs = [list(p) for p in zip(batch["source_path"], batch["target_path"])]
        self.pairs.setdefault(trainer.current_epoch, []).extend(pairs)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val_losses = []  # the logged metrics are those of the last validation

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self.val_losses.append([float(outputs), len(batch["source_path"])])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank = trainer.global_rank
        self.out.mkdir(parents=True, exist_ok=True)
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        torch.save(flat, self.out / f"rank{rank}.pt")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        record = {
            "world_size": trainer.world_size,
            "is_global_zero": trainer.is_global_zero,
            "pairs": self.pairs,
            "val_losses": self.val_losses,
            "metrics": metrics,
        }
        (self.out / f"rank{rank}.json").write_text(json.dumps(record))


class StepMarker(Callback):
    """Writes ``out/progress.json`` (epoch, step) before every training batch and sleeps
    ``delay`` s, so a test can kill the process in the middle of an epoch; also records where
    training started (``start.json``: epoch, global step and weight checksum at
    ``on_train_start``) and one random number drawn per batch (``draws.json``), to compare the
    random streams of resumed and uninterrupted runs."""

    def __init__(self, out: str, delay: float = 0.0) -> None:
        self.out = Path(out)
        self.delay = float(delay)
        self.draws: dict[str, float] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        start = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "weights": weight_sum(pl_module.state_dict()),
        }
        (self.out / "start.json").write_text(json.dumps(start))

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        state = {"epoch": trainer.current_epoch, "batch": batch_idx, "step": trainer.global_step}
        (self.out / "progress.json").write_text(json.dumps(state))
        self.draws[f"{trainer.current_epoch}/{batch_idx}"] = float(torch.rand(1))
        (self.out / "draws.json").write_text(json.dumps(self.draws))
        time.sleep(self.delay)
