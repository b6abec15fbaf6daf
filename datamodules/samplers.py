"""Torch samplers that shard pairs over DDP ranks themselves.

Both samplers subclass :class:`~torch.utils.data.DistributedSampler` only so that Lightning
recognises them as already distributed and never wraps them in its own distributed sampler,
whatever ``Trainer(use_distributed_sampler=...)`` says (``False`` is still the recommended
setting). They do not use the parent's logic.

:class:`EpochPairSampler` computes the epoch's pair list in the main process from
``(seed, epoch)`` and yields this rank's share as :data:`~datamodules.datasets.PairKey` tuples,
so persistent workers need no epoch state. Lightning calls ``set_epoch(current_epoch)`` on it
before every training epoch (also after resuming from a checkpoint); plain loops call
``set_epoch`` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler

from .sampling import PairSampling, padded_count, shard_positions

__all__ = ["EpochPairSampler", "EvalShardSampler"]


class _ShardingSampler(DistributedSampler):
    def __init__(self, rank: int, world_size: int, seed: int = 0) -> None:  # noqa: D107
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size; got rank={rank}, world_size={world_size}"
            )
        # DistributedSampler.__init__ is deliberately not called (see the module docstring).
        self.rank, self.num_replicas, self.seed = int(rank), int(world_size), int(seed)
        self.epoch, self.shuffle, self.drop_last = 0, False, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class EpochPairSampler(_ShardingSampler):
    """Yields ``(epoch, position, source, target)`` for this rank's share of each epoch.

    The epoch has ``padded_count(pairs_per_epoch, world_size)`` pairs, drawn by
    ``sampling.epoch_pairs(seed, epoch, n)``; rank ``r`` takes positions ``r, r + W, ...``.
    """

    def __init__(
        self,
        sampling: PairSampling,
        pairs_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(rank, world_size, seed)
        if pairs_per_epoch < 1:
            raise ValueError(f"pairs_per_epoch must be >= 1; got {pairs_per_epoch}")
        self.sampling = sampling
        self.total = padded_count(pairs_per_epoch, world_size)
        self.shuffle = True

    def __len__(self) -> int:
        return self.total // self.num_replicas

    def epoch_keys(self, epoch: int) -> list[tuple[int, int, int, int]]:
        """This rank's keys for ``epoch``."""
        pairs = self.sampling.epoch_pairs(self.seed, epoch, self.total)
        positions = shard_positions(self.total, self.rank, self.num_replicas)
        return [(int(epoch), int(p), int(pairs[p, 0]), int(pairs[p, 1])) for p in positions]

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        return iter(self.epoch_keys(self.epoch))


class EvalShardSampler(_ShardingSampler):
    """Positions ``rank, rank + W, ...`` of a fixed list of ``length`` pairs, in order.

    Like Lightning's own distributed sampler, the list is padded by wrapping around to a multiple
    of ``world_size`` so every rank runs the same number of steps (uneven steps can hang DDP). When
    ``length`` is not a multiple of ``world_size`` the first few pairs are evaluated twice; use a
    multiple, or one device, for exact test numbers.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank, world_size)
        if length < 1:
            raise ValueError(f"the pair list is empty (length {length})")
        self.length = int(length)
        self.total = padded_count(self.length, self.num_replicas)

    def __len__(self) -> int:
        return self.total // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        positions = shard_positions(self.total, self.rank, self.num_replicas)
        return iter(int(p) % self.length for p in positions)
