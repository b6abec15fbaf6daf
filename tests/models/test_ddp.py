"""Metrics are synchronised across DDP ranks (ddp_spawn on CPU)."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .helpers import make_module, square_pair


class ShiftedPairs(Dataset):
    """Item ``i`` is a box pair shifted by ``i + 1`` voxels (different Dice per item)."""

    def __init__(self, shape, n: int):
        self.items = [square_pair(shape, shift=i + 1) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def _validate(module, devices: int, strategy: str = "auto") -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, DataLoader(ShiftedPairs((16, 16), 2), batch_size=1), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.ddp
@pytest.mark.slow
def test_validation_metrics_are_averaged_over_ranks():
    torch.manual_seed(0)
    module = make_module("svf", (16, 16), log_figures=False)
    single = _validate(module, 1)
    ddp = _validate(module, 2, "ddp_spawn")
    for key in ("val/dice", "val/loss", "val/similarity"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
