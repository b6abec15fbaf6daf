"""LightningDataModules on TorchIO: volume pools, pair sampling, synthetic sets.

Start with :class:`PairDataModule` or :func:`load_preset` (``oai``, ``ixi``, ``synth2d``,
``synth3d``, ``folder``); the batch format is described in :mod:`datamodules.datasets`.
"""

from .callbacks import DataFaultMonitor
from .datasets import EvalPairDataset, TrainPairDataset, collate_pairs
from .faults import DataFaultError, FaultTracker
from .pair_datamodule import PairDataModule
from .pool import PairTable, VolumeTable, read_pair_csv, read_pool_csv, read_pool_folder
from .preprocessing import PreprocessingConfig, build_augmentation, build_preprocessing
from .presets import load_preset, preset_config, preset_names
from .samplers import EpochPairSampler, EvalShardSampler
from .sampling import ListPairSampling, PoolPairSampling, epoch_rng, shard_positions
from .synthetic import prepare_synthetic, synthetic_available

__all__ = [
    "DataFaultError",
    "DataFaultMonitor",
    "EpochPairSampler",
    "EvalPairDataset",
    "EvalShardSampler",
    "FaultTracker",
    "ListPairSampling",
    "PairDataModule",
    "PairTable",
    "PoolPairSampling",
    "PreprocessingConfig",
    "TrainPairDataset",
    "VolumeTable",
    "build_augmentation",
    "build_preprocessing",
    "collate_pairs",
    "epoch_rng",
    "load_preset",
    "prepare_synthetic",
    "preset_config",
    "preset_names",
    "read_pair_csv",
    "read_pool_csv",
    "read_pool_folder",
    "shard_positions",
    "synthetic_available",
]
