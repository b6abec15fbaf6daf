"""The training entry point: Hydra configs, run folders, checkpoints, loggers, resume.

``python train.py [overrides]``, ``rdmm train [overrides]`` and :func:`train` run the same code:
:func:`~.compose.compose_train_config` composes ``configs/train.yaml`` (installed as
``rdmm_lightning.configs``), :func:`~.run.run_training` checks and runs it.
"""

from .callbacks import BestCheckpoint, ConfigSnapshot, StepSeeds, checkpoint_callbacks
from .checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from .checks import check_config
from .compose import (
    CONFIG_KEY,
    OVERRIDES_KEY,
    ComposedConfig,
    compose_train_config,
    config_root,
    group_options,
)
from .errors import TrainingConfigError
from .run import TrainResult, infer_command, main, run_training, train
from .schema import CheckpointConfig, PathsConfig, TrainConfig, TrainerConfig

__all__ = [
    "CONFIG_KEY",
    "OVERRIDES_KEY",
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "CheckpointConfig",
    "ComposedConfig",
    "ConfigSnapshot",
    "PathsConfig",
    "StepSeeds",
    "TrainConfig",
    "TrainResult",
    "TrainerConfig",
    "TrainingConfigError",
    "atomic_torch_save",
    "check_config",
    "checkpoint_callbacks",
    "compose_train_config",
    "config_root",
    "group_options",
    "infer_command",
    "main",
    "run_training",
    "train",
]
