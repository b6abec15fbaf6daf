"""Training curricula as callbacks: they set module attributes at the start of each training
epoch and log the value (``schedule/<attribute>``). Models never count epochs themselves.

Example (the reference's schedule: symmetry from epoch 200, a second refinement step from 100)::

    callbacks = [SymmetrySchedule(start_epoch=200, weight=500.0),
                 RefinementStepsSchedule(start_epoch=100, num_steps=2)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

__all__ = ["AttributeSchedule", "SymmetrySchedule", "RefinementStepsSchedule"]


class AttributeSchedule(Callback):
    """Piecewise-constant schedule ``{epoch: value}`` for ``pl_module.<attribute>``: from each
    milestone epoch on, the attribute holds that milestone's value (before the first milestone
    it is left unchanged).

    Args:
        attribute: name of a module attribute (e.g. ``"num_steps"``, ``"symmetry_weight"``,
            ``"bidirectional"``, ``"reg_weight"``).
        milestones: ``{first epoch (0-based): value}``.
    """

    def __init__(self, attribute: str, milestones: Mapping[int, Any]):
        if not milestones:
            raise ValueError("milestones must hold at least one {epoch: value} entry")
        self.attribute = str(attribute)
        self.milestones = sorted((int(e), v) for e, v in milestones.items())
        if self.milestones[0][0] < 0:
            raise ValueError(f"milestone epochs must be >= 0; got {self.milestones[0][0]}")

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.attribute}]"

    def value_at(self, epoch: int) -> Any:
        """The scheduled value at ``epoch`` (None before the first milestone)."""
        value = None
        for start, v in self.milestones:
            if epoch >= start:
                value = v
        return value

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, self.attribute):
            raise ValueError(
                f"{type(self).__name__}: {type(pl_module).__name__} has no attribute "
                f"{self.attribute!r}"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = self.value_at(trainer.current_epoch)
        if value is not None:
            current = getattr(pl_module, self.attribute)
            setattr(
                pl_module, self.attribute, type(current)(value) if current is not None else value
            )
        pl_module.log(
            f"schedule/{self.attribute}",
            float(getattr(pl_module, self.attribute)),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )


class SymmetrySchedule(AttributeSchedule):
    """``symmetry_weight`` = ``initial`` before ``start_epoch``, ``weight`` from it on (a positive
    weight also switches on the target -> source pass)."""

    def __init__(self, start_epoch: int, weight: float, initial: float = 0.0):
        super().__init__("symmetry_weight", {0: float(initial), int(start_epoch): float(weight)})


class RefinementStepsSchedule(AttributeSchedule):
    """``num_steps`` = ``initial`` before ``start_epoch``, ``num_steps`` from it on."""

    def __init__(self, start_epoch: int, num_steps: int = 2, initial: int = 1):
        super().__init__("num_steps", {0: int(initial), int(start_epoch): int(num_steps)})
