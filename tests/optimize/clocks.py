"""Fake clocks for time-limit tests (no test depends on the wall clock)."""

from __future__ import annotations


class TickingClock:
    """Advances ``step`` seconds at every reading."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class ManualClock:
    """Stands still until :meth:`advance` moves it."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
