"""A callback that logs the data faults of :class:`~datamodules.PairDataModule`."""

from __future__ import annotations

import pytorch_lightning as pl

__all__ = ["DataFaultMonitor"]


class DataFaultMonitor(pl.Callback):
    """Logs ``data/unreadable_volumes`` and ``data/pairs_replaced`` (summed over ranks) at the
    end of every training epoch."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "fault_summary"):
            return
        summary = datamodule.fault_summary()
        pl_module.log_dict(
            {
                "data/unreadable_volumes": float(len(summary["unreadable"])),
                "data/pairs_replaced": float(summary["pairs_replaced"]),
            },
            reduce_fx="sum",
            sync_dist=True,
        )
