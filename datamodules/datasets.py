"""Torch datasets that return one registration pair per item, and their collate function.

Batch format (what the LightningModules rely on), from :func:`collate_pairs`:

* ``source``, ``target``: float32 ``(B, 1, *S)`` in [0, 1] (2D images give ``(B, 1, X, Y)``);
* ``source_label``, ``target_label``: int64 ``(B, 1, *S)``, present only when labels are loaded;
* ``source_path``, ``target_path``: lists of ``B`` str (the image files);
* ``spacing``: float32 ``(B, D)``, the target's voxel size (mm) after preprocessing.

Training items are keyed by ``(epoch, position, source, target)`` tuples that
:class:`~datamodules.samplers.EpochPairSampler` yields. A pair whose volume cannot be read is
replaced by ``sampling.draw(epoch_rng(seed, epoch, position, attempt), 1)``, so the replacement
depends only on the key and on which files are unreadable. Evaluation items are fixed; a read
failure there is an error naming the file (replacing pairs would change the reported metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .faults import DataFaultError, FaultTracker
from .pool import PairTable, VolumeTable
from .sampling import PairSampling, epoch_rng
from .volumes import LabelledVolume, VolumeLoader, VolumeReadError

__all__ = ["TrainPairDataset", "EvalPairDataset", "collate_pairs", "PairKey"]

PairKey = tuple[int, int, int, int]
"""``(epoch, position, source index, target index)``."""


def _item(
    source: LabelledVolume,
    target: LabelledVolume,
    source_path: str,
    target_path: str,
    labels: bool,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "source": source.image.data,
        "target": target.image.data,
        "source_path": source_path,
        "target_path": target_path,
        "spacing": torch.tensor(target.image.voxel_size_mm, dtype=torch.float32),
    }
    if labels:
        item["source_label"] = source.label.data
        item["target_label"] = target.label.data
    return item


class TrainPairDataset(Dataset):
    """Training pairs keyed by :data:`PairKey`, with fault skipping (see the module docstring).

    Args:
        table: the pool (or the volumes of a fixed training list).
        sampling: draws replacement pairs.
        loader: reads and preprocesses volumes (with the training augmentation).
        tracker: shared record of unreadable volumes.
        seed: run seed (replacements and augmentation seeds derive from it).
        flips: ``(N,)`` bool, volumes to flip left/right, or None.
        labels: load label maps (every volume must have one).
        max_retries: replacements tried for one item before :class:`DataFaultError`.
    """

    def __init__(
        self,
        table: VolumeTable,
        sampling: PairSampling,
        loader: VolumeLoader,
        tracker: FaultTracker,
        *,
        seed: int = 0,
        flips: np.ndarray | None = None,
        labels: bool = False,
        max_retries: int = 20,
    ) -> None:
        if labels and not table.has_all_labels:
            raise ValueError("train_labels=true needs a label for every training volume")
        self.table, self.sampling, self.loader, self.tracker = table, sampling, loader, tracker
        self.seed, self.flips, self.labels = int(seed), flips, bool(labels)
        self.max_retries = int(max_retries)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: PairKey) -> dict[str, Any]:
        epoch, position, src, tgt = (int(k) for k in key)
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.tracker.record_replacement()
                rng = epoch_rng(self.seed, epoch, position, attempt)
                src, tgt = (int(i) for i in self.sampling.draw(rng, 1)[0])
            source = self._volume(src, (epoch, position, attempt, 0))
            target = None if source is None else self._volume(tgt, (epoch, position, attempt, 1))
            if target is not None:
                return _item(
                    source, target, self.table.path(src), self.table.path(tgt), self.labels
                )
        raise DataFaultError(
            f"no readable pair for item {key} after {self.max_retries} "
            "replacements; check the data (see the logged unreadable files)"
        )

    def _volume(self, i: int, where: tuple[int, ...]) -> LabelledVolume | None:
        if self.tracker.is_bad(i):
            return None
        seed = None
        if self.loader.augmentation is not None:
            seed = int(epoch_rng(self.seed, *where).integers(2**62))
        flip = bool(self.flips[i]) if self.flips is not None else False
        label = self.table.label(i) if self.labels else None
        try:
            volume = self.loader.load(self.table.path(i), label, flip, seed)
        except VolumeReadError as err:
            self.tracker.record_failure(i, self.table.path(i), err.__cause__ or err)
            return None
        self.tracker.mark_ok(i)
        return volume


class EvalPairDataset(Dataset):
    """A fixed pair list (validation or test); item ``k`` is row ``k`` of the list.

    Args:
        pairs: the list.
        loader: reads and preprocesses volumes (no augmentation).
        flips: ``(N,)`` bool over ``pairs.volumes``, or None.
        labels: load label maps (the list must have them).
    """

    def __init__(
        self,
        pairs: PairTable,
        loader: VolumeLoader,
        flips: np.ndarray | None = None,
        labels: bool = True,
    ) -> None:
        if labels and not pairs.volumes.has_all_labels:
            raise ValueError("labels requested but the pair list lacks some label files")
        self.pairs, self.loader, self.flips, self.labels = pairs, loader, flips, bool(labels)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        src, tgt = (int(i) for i in self.pairs.pairs[int(index)])
        return _item(
            self._volume(src),
            self._volume(tgt),
            self.pairs.volumes.path(src),
            self.pairs.volumes.path(tgt),
            self.labels,
        )

    def _volume(self, i: int) -> LabelledVolume:
        table = self.pairs.volumes
        flip = bool(self.flips[i]) if self.flips is not None else False
        return self.loader.load(table.path(i), table.label(i) if self.labels else None, flip)


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack pair items into the batch format of the module docstring."""
    shapes = sorted({tuple(it[k].shape) for it in items for k in ("source", "target")})
    if len(shapes) > 1:
        raise ValueError(
            f"volumes of one batch differ in shape {shapes}; set "
            "preprocessing.resize_shape or preprocessing.crop_or_pad_shape"
        )
    batch: dict[str, Any] = {
        key: torch.stack([it[key] for it in items]) for key in ("source", "target", "spacing")
    }
    for key in ("source_label", "target_label"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    batch["source_path"] = [it["source_path"] for it in items]
    batch["target_path"] = [it["target_path"] for it in items]
    return batch
