"""Pure, seeded pair sampling: no I/O, no torch.

Every random draw comes from :func:`epoch_rng` seeded by ``(seed, epoch, *extra)``, so an epoch's
pair list depends only on the seed, the epoch and the index, never on worker or process timing.
Rank sharding is strided over the epoch's list: rank ``r`` of ``W`` takes positions
``r, r + W, ...``. The list is made ``ceil(n / W) * W`` long so that shards are equal, disjoint,
and together cover it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = [
    "PairSampling",
    "PoolPairSampling",
    "ListPairSampling",
    "epoch_rng",
    "padded_count",
    "shard_positions",
    "combined_codes",
]

_MAX_REJECTION_ROUNDS = 64


def epoch_rng(seed: int, epoch: int, *extra: int) -> np.random.Generator:
    """Generator seeded by ``(seed, epoch, *extra)`` (all non-negative integers)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), *map(int, extra)]))


def padded_count(n: int, world_size: int) -> int:
    """``n`` rounded up to a multiple of ``world_size``."""
    return -(-int(n) // int(world_size)) * int(world_size)


def shard_positions(n: int, rank: int, world_size: int) -> np.ndarray:
    """Positions ``rank, rank + world_size, ...`` below ``n`` (int64)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
    return np.arange(rank, n, world_size, dtype=np.int64)


class PairSampling(Protocol):
    """Something that draws pairs ``(n, 2)`` of volume indices."""

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def epoch_pairs(self, seed: int, epoch: int, n: int) -> np.ndarray: ...


class PoolPairSampling:
    """Random pairs from a pool: cross-subject unless ``intra_subject``, optionally same group.

    The source is uniform over the volumes that have at least one allowed partner; the target is
    uniform over the allowed partners of the source (same group, another subject; with
    ``intra_subject`` any other volume of the group). Pairs are drawn with replacement.

    Args:
        subjects: ``(N,)`` integer subject codes.
        groups: ``(N,)`` integer group codes (a combined code when several columns must match),
            or None for one group.
        intra_subject: allow both sides from the same subject (never the same volume).
    """

    def __init__(
        self, subjects: np.ndarray, groups: np.ndarray | None = None, intra_subject: bool = False
    ) -> None:
        self.subjects = np.asarray(subjects, dtype=np.int64)
        n = self.subjects.shape[0]
        self.groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
        if self.groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},); got {self.groups.shape}")
        self.intra_subject = bool(intra_subject)
        _, self.groups = np.unique(self.groups, return_inverse=True)
        self.order = np.argsort(self.groups, kind="stable")
        self.counts = np.bincount(self.groups)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.sources = np.flatnonzero(self._has_partner())
        if self.sources.size == 0:
            what = "two volumes" if intra_subject else "two subjects"
            raise ValueError(
                f"no pair can be formed: every group has fewer than {what} "
                f"(pool of {n} volumes, {self.counts.size} group(s))"
            )

    def _has_partner(self) -> np.ndarray:
        if self.intra_subject:
            return self.counts[self.groups] >= 2
        pair_keys = np.stack([self.groups, self.subjects])
        _, inverse, per_subject = np.unique(
            pair_keys, axis=1, return_inverse=True, return_counts=True
        )
        own = per_subject[inverse.reshape(-1)]
        return self.counts[self.groups] > own

    def _rejected(self, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        if self.intra_subject:
            return src == tgt
        return self.subjects[src] == self.subjects[tgt]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, 2)`` int64 pairs of volume indices."""
        src = self.sources[rng.integers(self.sources.size, size=n)]
        tgt = np.empty_like(src)
        todo = np.arange(n)
        for _ in range(_MAX_REJECTION_ROUNDS):
            if todo.size == 0:
                break
            g = self.groups[src[todo]]
            tgt[todo] = self.order[self.starts[g] + rng.integers(self.counts[g])]
            todo = todo[self._rejected(src[todo], tgt[todo])]
        for k in todo:  # rare: a subject that fills most of its group
            g = self.groups[src[k]]
            members = self.order[self.starts[g] : self.starts[g] + self.counts[g]]
            members = members[~self._rejected(np.full(members.size, src[k]), members)]
            tgt[k] = members[rng.integers(members.size)]
        return np.stack([src, tgt], axis=1)

    def epoch_pairs(self, seed: int, epoch: int, n: int) -> np.ndarray:
        """The ``n`` pairs of ``epoch``."""
        return self.draw(epoch_rng(seed, epoch), int(n))


class ListPairSampling:
    """A fixed pair list, reshuffled every epoch (repeated when more pairs are asked for)."""

    def __init__(self, pairs: np.ndarray) -> None:
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if self.pairs.shape[0] == 0:
            raise ValueError("the training pair list is empty")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.pairs[rng.integers(self.pairs.shape[0], size=n)]

    def epoch_pairs(self, seed: int, epoch: int, n: int) -> np.ndarray:
        rng = epoch_rng(seed, epoch)
        m = self.pairs.shape[0]
        order = np.concatenate([rng.permutation(m) for _ in range(-(-int(n) // m))])
        return self.pairs[order[: int(n)]]


def combined_codes(columns: list[np.ndarray]) -> np.ndarray | None:
    """One int64 code per row for the tuple of several code columns (None for no columns)."""
    if not columns:
        return None
    stacked = np.stack([np.asarray(c, np.int64) for c in columns])
    return np.unique(stacked, axis=1, return_inverse=True)[1].reshape(-1)
