"""Typed schema of the training config (``configs/train.yaml``), registered in Hydra's ConfigStore.

``train.yaml`` starts its defaults list with ``train_schema``, so the composed config is a
structured config: a misspelt top-level, ``trainer.*``, ``paths.*`` or ``checkpoint.*`` key is an
error that names the key, and values are type-checked. The free-form nodes (``model``, ``data``,
``logger.*``, ``callbacks.*``) are ``_target_`` configs; :func:`rdmm_lightning.training.checks.
check_targets` checks their keys against the target's signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = [
    "CheckpointConfig",
    "PathsConfig",
    "TrainConfig",
    "TrainerConfig",
    "register_schemas",
]


@dataclass
class PathsConfig:
    """Where runs go.

    Attributes:
        root: runs are written to ``<root>/<name>/<timestamp>/`` (relative to the working dir).
        run_dir: an explicit run folder instead (created if missing; e.g. for multi-node jobs).
    """

    root: str = "checkpoints"
    run_dir: str | None = None


@dataclass
class CheckpointConfig:
    """The run's checkpoints: ``best.ckpt`` (by ``monitor``) and ``last.ckpt`` (every epoch).

    Attributes:
        monitor: metric selecting ``best.ckpt``; ``auto``: ``dice_key`` when the validation pairs
            have labels, ``loss_key`` when they have none, no best checkpoint without validation.
        mode: ``min``, ``max`` or ``auto`` (``max`` for Dice, else ``min``).
        dice_key, loss_key: the metric names ``auto`` chooses between.
        save_last: write ``last.ckpt`` at the end of every ``every_n_epochs`` epochs.
        every_n_epochs: epochs between ``last.ckpt`` writes.
    """

    monitor: str = "auto"
    mode: str = "auto"
    dice_key: str = "val/dice"
    loss_key: str = "val/loss"
    save_last: bool = True
    every_n_epochs: int = 1


@dataclass
class TrainerConfig:
    """``pytorch_lightning.Trainer`` arguments (same names, same meaning).

    The training entry point adds ``logger``, ``callbacks``, ``plugins`` (atomic checkpoint
    writes) and ``default_root_dir`` (the run folder) itself. ``use_distributed_sampler`` is off:
    the PairDataModule's samplers shard pairs over ranks themselves.
    """

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int | None = 10
    min_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    detect_anomaly: bool = False
    profiler: str | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None


@dataclass
class TrainConfig:
    """The whole training config.

    Attributes:
        name: run name, the folder under ``paths.root``; default: the experiment's name.
        seed: seed of ``seed_everything`` (model initialisation) and of every training step
            (:class:`~.callbacks.StepSeeds`, so resumed runs repeat the random numbers of
            uninterrupted ones); the data order has its own ``data.seed``. None: not seeded.
        model: LightningModule config (``_target_`` + constructor arguments).
        data: LightningDataModule config (``_target_`` + constructor arguments).
        trainer: Trainer arguments.
        logger: named logger configs (``_target_``); empty: no logger.
        callbacks: named callback configs (``_target_``), added to the run's own callbacks.
        paths: run folder location.
        checkpoint: best/last checkpoint options.
        init_from: checkpoint whose weights start the training (new optimiser, epoch 0).
        init_from_strict: every weight must match the model (False: load matching ones only).
        ckpt_path: checkpoint to resume from (epoch, step, optimiser and scheduler state).
        float32_matmul_precision: ``torch.set_float32_matmul_precision`` (``high`` allows TF32).
        test: run the test set on the best checkpoint after training.
        print_infer_command: print an ``rdmm infer`` command for a validation pair at the end.
    """

    name: str | None = None
    seed: int | None = 0
    model: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init_from: str | None = None
    init_from_strict: bool = True
    ckpt_path: str | None = None
    float32_matmul_precision: str | None = None
    test: bool = False
    print_infer_command: bool = True


def register_schemas() -> None:
    """Store the schema as ``train_schema`` (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
