"""Shared record of unreadable volumes across DataLoader worker processes.

The tracker lives in shared memory created by the process that sets the datamodule up and is
inherited by its DataLoader workers (fork or spawn), so all workers of one rank see one record:

* ``state[i]`` per pool volume: 0 not read yet, 1 read fine, 2 unreadable. A volume found
  unreadable is logged once (``logging`` warning with its path and the error, plus a line in the
  optional ``log_path`` file) and later pairs skip it without reading it again.
* ``pairs_replaced`` counts the pairs that were replaced because one of their volumes failed.

When more than ``max_failure_fraction`` of the distinct volumes read so far are unreadable, the
next failure raises :class:`DataFaultError`. The fraction is measured over at least
``min(pool size, min_volumes)`` volumes, so the first failures of a run do not stop it. Each DDP
rank has its own tracker (ranks read disjoint pairs).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["DataFaultError", "FaultTracker", "FaultSummary"]

log = logging.getLogger(__name__)

_UNKNOWN, _OK, _BAD = 0, 1, 2


class DataFaultError(RuntimeError):
    """Too many unreadable volumes, or no readable replacement pair found."""


@dataclass(frozen=True)
class FaultSummary:
    """Counts of one tracker: indices of unreadable volumes and how many pairs were replaced."""

    unreadable: tuple[int, ...]
    volumes_read: int
    pairs_replaced: int


class FaultTracker:
    """Shared per-volume read state and counters (see the module docstring).

    Args:
        size: number of volumes in the pool.
        max_failure_fraction: largest tolerated fraction of unreadable volumes, in [0, 1].
        min_volumes: the fraction is measured over at least ``min(size, min_volumes)`` volumes.
        log_path: optional text file; one line ``path<TAB>error`` is appended per bad volume.
    """

    def __init__(
        self,
        size: int,
        max_failure_fraction: float = 0.01,
        min_volumes: int = 100,
        log_path: str | None = None,
    ) -> None:
        if not 0.0 <= max_failure_fraction <= 1.0:
            raise ValueError(f"max_failure_fraction must be in [0, 1]; got {max_failure_fraction}")
        self.size = int(size)
        self.max_failure_fraction = float(max_failure_fraction)
        self.min_volumes = min(self.size, int(min_volumes))
        self.log_path = log_path
        self._state = mp.RawArray("b", max(self.size, 1))
        self._replaced = mp.RawValue("q", 0)
        self._lock = mp.Lock()

    def _states(self) -> np.ndarray:
        return np.frombuffer(self._state, dtype=np.int8)[: self.size]

    def is_bad(self, i: int) -> bool:
        return self._state[i] == _BAD

    def mark_ok(self, i: int) -> None:
        if self._state[i] == _UNKNOWN:
            self._state[i] = _OK

    def record_failure(self, i: int, path: str, error: BaseException | str) -> None:
        """Mark volume ``i`` unreadable (logged the first time) and enforce the fraction."""
        with self._lock:
            if self._state[i] != _BAD:
                self._state[i] = _BAD
                log.warning("unreadable volume skipped: %s (%s)", path, error)
                if self.log_path:
                    with open(self.log_path, "a") as f:
                        f.write(f"{path}\t{_one_line(error)}\n")
            states = self._states()
            bad = int(np.count_nonzero(states == _BAD))
            read = int(np.count_nonzero(states != _UNKNOWN))
        limit = self.max_failure_fraction * max(read, self.min_volumes)
        if bad > limit:
            raise DataFaultError(
                f"{bad} of {read} volumes read so far are unreadable, more than "
                f"max_failure_fraction={self.max_failure_fraction} (latest: {path}: "
                f"{_one_line(error)}). Check the data, or raise max_failure_fraction."
            )

    def record_replacement(self) -> None:
        with self._lock:
            self._replaced.value += 1

    def summary(self) -> FaultSummary:
        states = self._states()
        return FaultSummary(
            tuple(int(i) for i in np.flatnonzero(states == _BAD)),
            int(np.count_nonzero(states != _UNKNOWN)),
            int(self._replaced.value),
        )


def _one_line(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return " ".join(str(text).split()).replace(os.linesep, " ")[:500]
