"""Tiny synthetic pairs and trainers for the LightningModule tests."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from rdmm_lightning.models import AffineNetModule, RegistrationNetModule

SMALL = {"features": (8, 8, 8)}
"""Small UNets for fast tests."""


def square_pair(shape, shift: int = 2, labels: bool = True) -> dict[str, Any]:
    """A bright box and the same box shifted by ``shift`` voxels along every axis; smooth edges
    so the similarity has useful gradients. Images ``(1, *S)``."""
    x = torch.zeros(1, *shape)
    y = torch.zeros(1, *shape)
    src = tuple(slice(n // 4, n // 2 + n // 8) for n in shape)
    tgt = tuple(slice(n // 4 + shift, n // 2 + n // 8 + shift) for n in shape)
    x[(slice(None), *src)] = 1.0
    y[(slice(None), *tgt)] = 1.0
    item: dict[str, Any] = {"source": x, "target": y, "spacing": torch.ones(len(shape))}
    if labels:
        item["source_label"] = (x > 0.5).long()
        item["target_label"] = (y > 0.5).long()
    return item


class PairSet(Dataset):
    """``n`` copies of :func:`square_pair` (batch format of ``datamodules.datasets``)."""

    def __init__(self, shape, n: int = 2, labels: bool = True, shift: int = 2):
        self.item = square_pair(shape, shift, labels)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item


def loader(shape, n: int = 2, batch_size: int = 2, **kw) -> DataLoader:
    return DataLoader(PairSet(shape, n, **kw), batch_size=batch_size)


def trainer(tmp_path, **kw) -> pl.Trainer:
    """CPU trainer without checkpointing, progress bar or summary."""
    opts: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
    }
    opts.update(kw)
    return pl.Trainer(**opts)


def make_module(model: str, shape, **kw) -> pl.LightningModule:
    """A small module of ``model`` ("affine", "svf", "lddmm", "rdmm") for the grid ``shape``."""
    if model == "affine":
        opts = {"features": (8, 8, 8), "hidden": 16, "num_steps": 2}
        opts.update(kw)
        return AffineNetModule(image_shape=shape, **opts)
    opts = {**SMALL, "solver_steps": 4}
    opts.update(kw)
    return RegistrationNetModule(model, image_shape=shape, **opts)


def batch_of(shape, batch: int = 1, **kw) -> dict[str, Any]:
    item = square_pair(shape, **kw)
    return {k: v.unsqueeze(0).expand(batch, *v.shape).clone() for k, v in item.items()}


def seed(value: int = 0) -> None:
    torch.manual_seed(value)
