"""The training entry point: Hydra configs, run folders, checkpoints, loggers, resume.

``python train.py [overrides]`` and ``rdmm train [overrides]`` run the Hydra app of :mod:`.app`
on ``configs/train.yaml`` (installed as ``rdmm_lightning.configs``); :func:`train` composes the
same config with :func:`~.compose.compose_train_config`. Both end in :func:`~.run.run_training`,
which checks and runs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "main": "app",
    "BestCheckpoint": "callbacks",
    "ConfigSnapshot": "callbacks",
    "StepSeeds": "callbacks",
    "checkpoint_callbacks": "callbacks",
    "AtomicCheckpointIO": "checkpoint_io",
    "atomic_torch_save": "checkpoint_io",
    "check_config": "checks",
    "CONFIG_KEY": "compose",
    "OVERRIDES_KEY": "compose",
    "ComposedConfig": "compose",
    "compose_train_config": "compose",
    "config_root": "compose",
    "group_options": "compose",
    "TrainingConfigError": "errors",
    "TrainResult": "run",
    "infer_command": "run",
    "run_training": "run",
    "train": "run",
    "CheckpointConfig": "schema",
    "PathsConfig": "schema",
    "TrainConfig": "schema",
    "TrainerConfig": "schema",
}
"""Where each public name lives; submodules load on first use (PyTorch Lightning and Hydra are
imported only when training is used, not by every ``rdmm`` command)."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


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
