"""Shared LightningModule shell: training grid, DDP-safe metrics, figures, optimiser, checkpoint
metadata. Subclasses implement ``_step(batch, stage) -> loss`` and ``predict``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics import MeanMetric

from .._version import __version__
from ..grid import Grid, ras_affine
from ..io.preprocessing import PreprocessingConfig
from ..metrics.dice import mean_dice
from ..metrics.jacobian import fold_statistics, jacobian_determinant
from ..ops.warp import warp_labels
from ..shooting.result import NonFiniteInputError
from .figures import log_figure
from .hparams import check_image_shape

__all__ = [
    "RegistrationModuleBase",
    "TrainingDivergedError",
    "CHECKPOINT_KEY",
    "STAGES",
    "EVAL_METRICS",
]

CHECKPOINT_KEY = "rdmm_lightning"
"""Checkpoint entry with the module class, model name, package version and schedule state."""
STAGES = ("train", "val", "test")
EVAL_METRICS = ("dice", "negative_jacobian_fraction", "folds")


class TrainingDivergedError(RuntimeError):
    """The weights no longer give a finite loss, so the run cannot recover: a long run of
    updates without finite gradients (see ``max_consecutive_skipped_steps``), or networks whose
    outputs on the (finite) validation images are not finite. One-line message; ``train.py``
    and ``rdmm train`` print it and exit with 1 (the checkpoints written so far stay)."""


def adam(params: Iterable[torch.nn.Parameter], **options: Any) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters instead of a loop of small ops:
    5.8 -> 1.3 ms per step for the 2D rdmm-net's 0.34 M parameters on one CPU thread) where the
    parameters' device has one (CUDA; CPU from torch 2.4); the default implementation otherwise.
    Same update rule either way."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **options)
    except RuntimeError:  # no fused kernel for these parameters' device or dtype
        return torch.optim.Adam(params, **options)


class RegistrationModuleBase(pl.LightningModule):
    """Common parts of :class:`AffineNetModule` and :class:`RegistrationNetModule`.

    Subclasses call :meth:`_setup_common` in ``__init__`` (after ``save_hyperparameters``),
    define ``model_name``, ``loss_terms`` and ``schedule_attributes`` and implement ``_step``.
    """

    model_name: str = ""
    max_consecutive_skipped_steps: int = 100
    """A run of this many updates in a row with non-finite gradients stops the training with
    :class:`TrainingDivergedError`: a pair on which the loss diverges now and then is skipped,
    but weights whose every output is non-finite (a finite update too large, e.g. a gradient
    spike without ``trainer.gradient_clip_val``) would otherwise train on, unchanged, to the
    end of the budget."""
    loss_terms: tuple[str, ...] = ("loss",)
    schedule_attributes: tuple[str, ...] = ()

    def _setup_common(self, image_shape: Sequence[int], spacing_mode: str) -> None:
        self.image_shape = check_image_shape(image_shape, spacing_mode)
        self.dim = len(self.image_shape)
        self.spacing_mode = spacing_mode
        self.skipped_steps = 0  # updates dropped for non-finite gradients
        self._skipped_run: tuple[int, int] = (0, 0)  # (first step, length) of the current run
        # preprocessing record (spatial and intensity) of the training volumes, set when loaded
        # from a training checkpoint (rdmm_lightning.models.load_registration_checkpoint); None:
        # the image_shape grid over the target's field of view
        self.preprocessing: PreprocessingConfig | None = None
        names = self.loss_terms + EVAL_METRICS
        self.stage_metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in STAGES for name in names}
        )
        self._figure: Figure | None = None

    # ----------------------------------------------------------------------------- grids
    def domain_spacing(
        self, shape: Sequence[int], voxel_size_mm: Sequence[float] | None = None
    ) -> tuple[float, ...]:
        """Domain spacing of a grid of ``shape`` in this model's spacing mode
        (:meth:`Grid.from_affine <rdmm_lightning.grid.Grid.from_affine>`; ``voxel_size_mm`` is
        used in physical mode, isotropic if None)."""
        affine = None if voxel_size_mm is None else ras_affine(voxel_size_mm)
        return Grid.from_affine(shape, affine, self.spacing_mode).domain_spacing

    def batch_spacing(self, batch: dict[str, Any], shape: Sequence[int]) -> tuple[float, ...]:
        """Domain spacing of a batch's grid (``batch["spacing"]``: voxel size in mm, used in
        physical mode)."""
        voxel_size_mm = None
        if self.spacing_mode == "physical" and "spacing" in batch:
            voxel_size_mm = [float(v) for v in torch.as_tensor(batch["spacing"])[0].tolist()]
        return self.domain_spacing(shape, voxel_size_mm)

    def check_images(self, source: Tensor, target: Tensor) -> None:
        """Raise ValueError unless both are float ``(B, 1, *S)`` with this model's D."""
        for name, x in (("source", source), ("target", target)):
            if not isinstance(x, Tensor) or x.dim() != self.dim + 2 or x.shape[1] != 1:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(
                    f"{name} must be (B, 1, *S) with {self.dim} spatial dims for this "
                    f"{self.dim}D model; got {got}"
                )
        if source.shape != target.shape:
            raise ValueError(
                f"source and target must have the same shape; got {tuple(source.shape)} and "
                f"{tuple(target.shape)}"
            )

    # --------------------------------------------------------------------------- logging
    def log_value(self, stage: str, name: str, value: Tensor | float, batch_size: int) -> None:
        """Accumulate ``value`` (a batch mean) in the stage's MeanMetric and log it per epoch
        (torchmetrics syncs across processes); the training loss is also logged per step."""
        value = torch.as_tensor(value, dtype=torch.float32, device=self.device).detach()
        metric = self.stage_metrics[f"{stage}_{name}"]
        metric.update(value, batch_size)
        self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        if stage == "train" and name == "loss":
            self.log("train/loss_step", value, on_step=True, on_epoch=False, prog_bar=True)

    def log_map_metrics(
        self,
        stage: str,
        phi_inv: Tensor,
        spacing: Sequence[float],
        batch: dict[str, Any],
    ) -> None:
        """Dice (when the batch has labels), negative-Jacobian fraction and folds of
        ``phi_inv: (B, D, *S)`` (the source -> target maps of the batch)."""
        b = phi_inv.shape[0]
        with torch.no_grad():
            stats = fold_statistics(jacobian_determinant(phi_inv.detach(), spacing))
            frac = stats["negative_jacobian_fraction"].float().mean()
            self.log_value(stage, "negative_jacobian_fraction", frac, b)
            self.log_value(stage, "folds", stats["folds"].float().mean(), b)
            if "source_label" in batch and "target_label" in batch:
                warped = warp_labels(batch["source_label"], phi_inv.detach(), spacing)
                dice = mean_dice(warped, batch["target_label"])
                if bool(torch.isfinite(dice).all()):
                    self.log_value(stage, "dice", dice.float().mean(), b)

    def remember_figure(self, fig: Figure) -> None:
        """Keep one figure per validation epoch (logged in ``on_validation_epoch_end``)."""
        self._figure = fig

    def want_figure(self, batch_idx: int) -> bool:
        return (
            bool(self.hparams.get("log_figures", True))
            and batch_idx == 0
            and self._trainer is not None
            and not self.trainer.sanity_checking
            and self.trainer.is_global_zero
        )

    def on_validation_epoch_end(self) -> None:
        if self._figure is not None:
            epoch = self.current_epoch
            log_figure(self.trainer, self._figure, "val/overview", self.global_step, epoch)
            self._figure = None

    # ------------------------------------------------------------------------- lightning
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        try:
            return self._step(batch, "train", batch_idx)
        except NonFiniteInputError:  # the networks' outputs overflowed: no loss to step on
            return self._skipped_step_loss()

    def _skipped_step_loss(self) -> Tensor:
        """A NaN loss on every trainable parameter, for a step that has no loss: its backward
        pass gives NaN gradients, so ``on_before_optimizer_step`` drops the update and counts it.
        Not ``None`` (Lightning's skip): under DDP every rank has to take part in each gradient
        all-reduce, and the NaN it contributes makes every rank drop the same update."""
        total = torch.stack([p.sum().float() for p in self.trainable_parameters()]).sum()
        return total * float("nan")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        try:
            return self._step(batch, "val", batch_idx)
        except NonFiniteInputError:  # finite validation images: the weights are broken
            raise self._diverged(
                f"the networks' outputs on validation batch {batch_idx} are not finite"
            ) from None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test", batch_idx)

    def _step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> Tensor:
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip an update whose gradients are not finite (a pair on which the loss diverged):
        every gradient is dropped, so the optimizer leaves the parameters and its moments as
        they were. The running count is logged as ``train/skipped_steps``."""
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self._skipped_run = (0, 0)
            return
        for p in self.parameters():
            p.grad = None
        self._record_skipped_step()

    def _record_skipped_step(self) -> None:
        """Count a dropped update; raise :class:`TrainingDivergedError` at the end of a run of
        ``max_consecutive_skipped_steps`` of them."""
        self.skipped_steps += 1
        first, length = self._skipped_run
        first = first if length else self.global_step
        self._skipped_run = (first, length + 1)
        if self._trainer is not None:
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)
        if length + 1 >= self.max_consecutive_skipped_steps:
            raise self._diverged(
                f"the last {length + 1} updates (from step {first}) had no finite loss or "
                f"gradients, so the weights stayed those of step {first}"
            )

    def _diverged(self, reason: str) -> TrainingDivergedError:
        return TrainingDivergedError(
            f"training diverged at step {self.global_step}: {reason}; resume from a checkpoint "
            "written before it with a lower model.lr or with trainer.gradient_clip_val"
        )

    def configure_optimizers(self):
        hp = self.hparams
        opt = adam(self.trainable_parameters(), lr=hp.lr, weight_decay=hp.get("weight_decay", 0.0))
        step = hp.get("lr_step_epochs")
        if not step:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, int(step), hp.get("lr_gamma", 0.5))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def schedule_state(self) -> dict[str, Any]:
        """Current values of the attributes that schedule callbacks change."""
        return {name: getattr(self, name) for name in self.schedule_attributes}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "module": type(self).__name__,
            "model": self.model_name,
            "version": __version__,
            "image_shape": list(self.image_shape),
            "spacing_mode": self.spacing_mode,
            "schedule": self.schedule_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY) or {}
        for name, value in (meta.get("schedule") or {}).items():
            if name in self.schedule_attributes:
                setattr(self, name, value)
