"""``PairDataModule``: registration pairs streamed from large volume pools through TorchIO.

Training data is either a *pool* (a CSV with one row per volume, or a folder of files) from which
every epoch draws ``pairs_per_epoch`` random cross-subject pairs, or a fixed pair list
(``train_pairs``) reshuffled every epoch. Validation and test use fixed pair lists. Only a light
index (numpy arrays of paths and codes) is held in memory; workers read each volume when a pair
needs it. Batches follow the format of :mod:`datamodules.datasets`.

Epochs. The training sampler (:class:`~datamodules.samplers.EpochPairSampler`) computes the
epoch's pairs in the main process from ``(seed, epoch)`` and yields this rank's keys; Lightning
calls its ``set_epoch`` before each epoch, so persistent workers and resumed runs need nothing
else. Without Lightning call :meth:`PairDataModule.set_epoch` before iterating.

Distributed. Every rank draws the same epoch list and takes positions ``rank::world_size`` of it
(the list is padded to a multiple of ``world_size``): shards are disjoint and cover the epoch.
The samplers subclass ``DistributedSampler`` so Lightning never replaces them; configure the
trainer with ``use_distributed_sampler=False`` all the same. Rank and world size come from the
attached trainer, else from ``torch.distributed``, else ``(0, 1)``.

Preprocessing. Every volume goes through one
:class:`~rdmm_lightning.io.preprocessing.PreprocessingConfig` (``self.preprocessing``). Its plain
dict replaces the ``preprocessing`` option in the hyper-parameters, which Lightning stores in
every checkpoint (``checkpoint["datamodule_hyper_parameters"]``); ``rdmm infer`` and
``rdmm evaluate --checkpoint`` replay it on new pairs.

Faults. In training, an unreadable volume is logged once with its path, recorded in shared
memory visible to all workers of the rank (:mod:`datamodules.faults`), and its pair is replaced
by a pair drawn from ``(seed, epoch, position, attempt)``; too many unreadable volumes raise
:class:`~datamodules.faults.DataFaultError`. :meth:`PairDataModule.fault_summary` reports them.
Validation/test lists are checked in ``setup`` (missing files or labels: ValueError naming them)
and a read failure there is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .datasets import EvalPairDataset, TrainPairDataset, collate_pairs
from .faults import FaultTracker
from .pool import PairTable, VolumeTable, read_pair_csv, read_pool_csv, read_pool_folder
from .preprocessing import PreprocessingConfig, build_augmentation, parse_side
from .samplers import EpochPairSampler, EvalShardSampler
from .sampling import ListPairSampling, PairSampling, PoolPairSampling, combined_codes
from .synthetic import _options, prepare_synthetic
from .volumes import VolumeLoader

__all__ = ["PairDataModule"]


def _plain(value: Any) -> Any:
    """Plain dicts/lists from config containers (OmegaConf or not)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


class PairDataModule(pl.LightningDataModule):
    """Registration pairs from a volume pool or pair lists (see the module docstring).

    Args:
        data_dir: base folder for relative ``pool``/``*_pairs`` paths (and the output folder of
            ``synthetic`` data); None resolves them against the working directory.
        pool: pool CSV (columns below) or a folder of volumes (``pool_pattern``).
        pool_pattern: glob of volumes inside a folder pool (``**`` recurses).
        path_column, label_column, subject_column: pool CSV columns (label optional; None
            subject makes every volume its own subject).
        subject_pattern: regex giving the subject id from a folder pool's file names.
        group_columns: extra pool CSV columns to keep (e.g. ``side``, ``visit``).
        train_pairs: fixed training pair list instead of a pool.
        val_pairs, test_pairs: fixed pair lists ``source,target,source_label,target_label``.
        pairs_per_epoch: training pairs per epoch (all ranks together); None: the pool size or
            the list length.
        intra_subject: allow pairs of two volumes of one subject (never one volume twice).
        same_group: pool column(s) that must be equal on both sides (e.g. ``side``).
        exclude_eval_volumes: drop from training the volumes used in val/test pairs.
        train_labels: load label maps for training pairs (every training volume needs one).
        require_eval_labels: val/test pairs must have both label files.
        side_column: column with left/right (pool column; ``source_<col>``/``target_<col>`` in
            pair lists).
        flip_to_side: ``"left"`` or ``"right"``: flip the other side's volumes left/right.
        preprocessing: :class:`~rdmm_lightning.io.preprocessing.PreprocessingConfig` options;
            the resolved record (every field) replaces them in ``hparams``, so checkpoints hold
            it and ``rdmm infer`` replays it.
        augmentation: ``{torchio Random* class name: kwargs}`` for training volumes.
        cache_dir: folder of an on-disk cache of preprocessed volumes.
        batch_size, eval_batch_size: per-rank batch sizes (eval defaults to ``batch_size``).
        num_workers, persistent_workers, pin_memory: DataLoader options (persistent defaults to
            ``num_workers > 0``).
        seed: seed of the pair sampling, replacements and augmentation.
        max_failure_fraction: tolerated fraction of unreadable training volumes.
        max_retries: replacement pairs tried for one training item.
        fault_log: text file listing unreadable volumes (appended).
        synthetic: ``"synth2d"`` or ``"synth3d"``: generate that dataset into ``data_dir``.
        synthetic_options: generator options (see :mod:`datamodules.synthetic`).
        verify_files: check in ``setup`` that every pool file exists.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        pool: str | None = None,
        pool_pattern: str = "*.nii.gz",
        path_column: str = "path",
        label_column: str | None = None,
        subject_column: str | None = "subject",
        subject_pattern: str | None = None,
        group_columns: Sequence[str] = (),
        train_pairs: str | None = None,
        val_pairs: str | None = None,
        test_pairs: str | None = None,
        pairs_per_epoch: int | None = 1000,
        intra_subject: bool = False,
        same_group: str | Sequence[str] | None = None,
        exclude_eval_volumes: bool = True,
        train_labels: bool = False,
        require_eval_labels: bool = True,
        side_column: str | None = None,
        flip_to_side: str | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        augmentation: Mapping[str, Mapping[str, Any] | None] | None = None,
        cache_dir: str | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        persistent_workers: bool | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        max_failure_fraction: float = 0.01,
        max_retries: int = 20,
        fault_log: str | None = None,
        synthetic: str | None = None,
        synthetic_options: Mapping[str, Any] | None = None,
        verify_files: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.synthetic = synthetic
        self.synthetic_options = _plain(synthetic_options) or {}
        if synthetic is not None:
            _options(synthetic, self.synthetic_options)
            if data_dir is None:
                raise ValueError("synthetic data needs data_dir (the folder to write it to)")
        self.data_dir = None if data_dir is None else Path(os.path.expanduser(str(data_dir)))
        if self.data_dir is not None and synthetic is None and not self.data_dir.is_dir():
            raise ValueError(f"data_dir: folder not found: {self.data_dir}")
        if pool is not None and train_pairs is not None:
            raise ValueError("set either pool or train_pairs, not both")
        if pool is None and train_pairs is None and val_pairs is None and test_pairs is None:
            raise ValueError("no data: set pool or train_pairs (and/or val_pairs, test_pairs)")
        self.paths = {
            name: self._resolve(name, value)
            for name, value in (
                ("pool", pool),
                ("train_pairs", train_pairs),
                ("val_pairs", val_pairs),
                ("test_pairs", test_pairs),
            )
        }
        self.pool_pattern, self.path_column = pool_pattern, path_column
        self.label_column, self.subject_column = label_column, subject_column
        self.subject_pattern = subject_pattern
        self.same_group = _names(same_group)
        self.side_column = side_column
        self.flip_to_side = None if flip_to_side is None else parse_side(flip_to_side)
        if self.flip_to_side is not None and side_column is None:
            raise ValueError("flip_to_side needs side_column (the column holding left/right)")
        self.group_columns = tuple(
            dict.fromkeys(_names(group_columns) + self.same_group + _names(side_column))
        )
        self.preprocessing = PreprocessingConfig.from_mapping(_plain(preprocessing))
        # the complete record in the hyper-parameters: Lightning writes them into every
        # checkpoint ("datamodule_hyper_parameters"), where `rdmm infer` finds them
        self.hparams["preprocessing"] = self.preprocessing.to_dict()
        if self.flip_to_side is not None and not self.preprocessing.canonical:
            raise ValueError("flip_to_side needs preprocessing.canonical=true")
        self.augmentation = build_augmentation(_plain(augmentation))
        self._check_numbers(pairs_per_epoch, batch_size, eval_batch_size, num_workers, max_retries)
        self.pairs_per_epoch = pairs_per_epoch
        self.intra_subject, self.exclude_eval_volumes = bool(intra_subject), exclude_eval_volumes
        self.train_labels, self.require_eval_labels = bool(train_labels), require_eval_labels
        self.cache_dir = cache_dir
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.persistent_workers = (
            self.num_workers > 0
            if persistent_workers is None
            else bool(persistent_workers) and self.num_workers > 0
        )
        self.pin_memory, self.seed = bool(pin_memory), int(seed)
        self.max_failure_fraction, self.max_retries = float(max_failure_fraction), max_retries
        self.fault_log, self.verify_files = fault_log, bool(verify_files)
        self.train_set: TrainPairDataset | None = None
        self.val_set: EvalPairDataset | None = None
        self.test_set: EvalPairDataset | None = None
        self.sampling: PairSampling | None = None
        self.tracker: FaultTracker | None = None
        self._train_sampler: EpochPairSampler | None = None
        self._epoch = 0

    # ----------------------------------------------------------------------------- validation
    def _resolve(self, option: str, value: str | None) -> Path | None:
        if value is None:
            return None
        path = Path(os.path.expanduser(str(value)))
        if not path.is_absolute() and self.data_dir is not None:
            path = self.data_dir / path
        if self.synthetic is None and not path.exists():
            raise ValueError(f"{option}: not found: {path}")
        return path

    @staticmethod
    def _check_numbers(
        pairs: int | None, batch: int, eval_batch: int | None, workers: int, retries: int
    ) -> None:
        checks = {
            "pairs_per_epoch": pairs is None or pairs >= 1,
            "batch_size": batch >= 1,
            "eval_batch_size": eval_batch is None or eval_batch >= 1,
            "num_workers": workers >= 0,
            "max_retries": retries >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} is out of range")

    # ------------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Generate the synthetic dataset on first use (once per node)."""
        if self.synthetic is not None:
            prepare_synthetic(self.synthetic, self.data_dir, self.synthetic_options)

    def setup(self, stage: str | None = None) -> None:
        """Read the indexes (cheap); builds only what ``stage`` needs, once."""
        if self.synthetic is not None:
            self.prepare_data()  # no-op when present; covers use without a Trainer
            for option, path in self.paths.items():
                if path is not None and not path.exists():
                    raise ValueError(f"{option}: not found after generating data: {path}")
        eval_loader = VolumeLoader(self.preprocessing, None, self.cache_dir)
        if stage in (None, "fit", "validate") and self.val_set is None and self.paths["val_pairs"]:
            self.val_set = self._eval_set(self.paths["val_pairs"], eval_loader)
        if stage in (None, "test") and self.test_set is None and self.paths["test_pairs"]:
            self.test_set = self._eval_set(self.paths["test_pairs"], eval_loader)
        if stage in (None, "fit") and self.train_set is None:
            self._setup_train()

    def _eval_set(self, path: Path, loader: VolumeLoader) -> EvalPairDataset:
        side = self.side_column if self.flip_to_side is not None else None
        pairs = read_pair_csv(path, self.require_eval_labels, side)
        labels = pairs.volumes.labels is not None and pairs.volumes.has_all_labels
        return EvalPairDataset(pairs, loader, self._flips(pairs.volumes, path), labels)

    def _flips(self, table: VolumeTable, where: Path) -> np.ndarray | None:
        if self.flip_to_side is None:
            return None
        values = table.group_values[self.side_column]
        try:
            sides = np.array([parse_side(v.decode("utf-8")) for v in values])
        except ValueError as err:
            raise ValueError(f"{where}: side_column {self.side_column!r}: {err}") from None
        return (sides != self.flip_to_side)[table.groups[self.side_column]]

    def _eval_paths(self) -> set[bytes]:
        paths: set[bytes] = set()
        for dataset in (self.val_set, self.test_set):
            if dataset is not None:
                paths.update(dataset.pairs.volumes.paths.tolist())
        for name in ("val_pairs", "test_pairs"):  # lists not set up for this stage
            path = self.paths[name]
            if path is not None and (
                name == "val_pairs"
                and self.val_set is None
                or name == "test_pairs"
                and self.test_set is None
            ):
                paths.update(read_pair_csv(path, False).volumes.paths.tolist())
        return paths

    def _setup_train(self) -> None:
        if self.paths["pool"] is None and self.paths["train_pairs"] is None:
            return
        excluded = self._eval_paths() if self.exclude_eval_volumes else set()
        if self.paths["pool"] is not None:
            table = self._read_pool(self.paths["pool"])
            if excluded:
                table = table.select(~np.isin(table.paths, list(excluded)))
            groups = combined_codes([table.groups[c] for c in self.same_group])
            sampling: PairSampling = PoolPairSampling(table.subjects, groups, self.intra_subject)
            default_count = len(table)
        else:
            pair_table = self._read_train_pairs(self.paths["train_pairs"], excluded)
            table, sampling = pair_table.volumes, ListPairSampling(pair_table.pairs)
            default_count = len(pair_table)
        if self.verify_files:
            _verify_files(table)
        if self.pairs_per_epoch is None:
            self.pairs_per_epoch = default_count
        self.sampling = sampling
        self.tracker = FaultTracker(len(table), self.max_failure_fraction, log_path=self.fault_log)
        loader = VolumeLoader(self.preprocessing, self.augmentation, self.cache_dir)
        source = self.paths["pool"] or self.paths["train_pairs"]
        self.train_set = TrainPairDataset(
            table,
            sampling,
            loader,
            self.tracker,
            seed=self.seed,
            flips=self._flips(table, source),
            labels=self.train_labels,
            max_retries=self.max_retries,
        )

    def _read_pool(self, path: Path) -> VolumeTable:
        if path.is_dir():
            if self.group_columns:
                raise ValueError(
                    f"a folder pool has no columns: same_group/side_column/"
                    f"group_columns {list(self.group_columns)} need a pool CSV"
                )
            return read_pool_folder(path, self.pool_pattern, self.subject_pattern)
        if self.train_labels and self.label_column is None:
            raise ValueError("train_labels=true needs label_column (the pool's label column)")
        return read_pool_csv(
            path, self.path_column, self.label_column, self.subject_column, self.group_columns
        )

    def _read_train_pairs(self, path: Path, excluded: set[bytes]) -> PairTable:
        side = self.side_column if self.flip_to_side is not None else None
        pairs = read_pair_csv(path, self.train_labels, side)
        if excluded:
            keep_volume = ~np.isin(pairs.volumes.paths, list(excluded))
            keep = keep_volume[pairs.pairs].all(axis=1)
            pairs = PairTable(pairs.volumes, pairs.pairs[keep])
        return pairs

    # ----------------------------------------------------------------------------- loaders
    def _distributed(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _loader(self, dataset: Any, sampler: Any, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(
        self, rank: int | None = None, world_size: int | None = None
    ) -> DataLoader:
        """This rank's share of each epoch (``rank``/``world_size`` override the detection)."""
        if self.train_set is None:
            self.setup("fit")
        if self.train_set is None:
            raise ValueError("no training data: set pool or train_pairs")
        auto_rank, auto_world = self._distributed()
        self._train_sampler = EpochPairSampler(
            self.sampling,
            int(self.pairs_per_epoch),
            self.seed,
            auto_rank if rank is None else rank,
            auto_world if world_size is None else world_size,
        )
        self._train_sampler.set_epoch(self._epoch)
        return self._loader(self.train_set, self._train_sampler, self.batch_size)

    def _eval_loader(
        self, dataset: EvalPairDataset | None, rank: int | None, world_size: int | None
    ) -> DataLoader | list:
        if dataset is None:
            return []
        auto_rank, auto_world = self._distributed()
        sampler = EvalShardSampler(
            len(dataset),
            auto_rank if rank is None else rank,
            auto_world if world_size is None else world_size,
        )
        return self._loader(dataset, sampler, self.eval_batch_size)

    def val_dataloader(self, rank: int | None = None, world_size: int | None = None) -> Any:
        if self.val_set is None and self.paths["val_pairs"] is not None:
            self.setup("validate")
        return self._eval_loader(self.val_set, rank, world_size)

    def test_dataloader(self, rank: int | None = None, world_size: int | None = None) -> Any:
        if self.test_set is None and self.paths["test_pairs"] is not None:
            self.setup("test")
        return self._eval_loader(self.test_set, rank, world_size)

    # ------------------------------------------------------------------------------ helpers
    def set_epoch(self, epoch: int) -> None:
        """Select the training epoch (Lightning does this itself through the sampler)."""
        self._epoch = int(epoch)
        if self._train_sampler is not None:
            self._train_sampler.set_epoch(epoch)

    def fault_summary(self) -> dict[str, Any]:
        """Unreadable training volumes (paths) and replaced pairs, for this rank."""
        if self.tracker is None or self.train_set is None:
            return {"unreadable": [], "volumes_read": 0, "pairs_replaced": 0}
        summary = self.tracker.summary()
        return {
            "unreadable": [self.train_set.table.path(i) for i in summary.unreadable],
            "volumes_read": summary.volumes_read,
            "pairs_replaced": summary.pairs_replaced,
        }


def _verify_files(table: VolumeTable) -> None:
    missing = [table.path(i) for i in range(len(table)) if not os.path.isfile(table.path(i))]
    if missing:
        raise ValueError(
            f"{len(missing)} pool file(s) not found (verify_files=true), e.g. {missing[:3]}"
        )
