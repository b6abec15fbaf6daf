"""Wall-clock budget and a one-line progress display for the optimisers (stderr, no tqdm)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["Deadline", "ProgressLine", "StopOptimization", "format_terms"]


class StopOptimization(Exception):
    """Raised inside an objective to end the optimisation early; ``reason`` is one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Deadline:
    """Wall-clock budget of one call: ``max_time`` seconds from construction (None: unlimited)."""

    def __init__(self, max_time: float | None, start: float | None = None):
        if max_time is not None and not (isinstance(max_time, int | float) and max_time > 0):
            raise ValueError(
                f"max_time must be a positive number of seconds or None; got {max_time}"
            )
        self.max_time = None if max_time is None else float(max_time)
        self.start = time.perf_counter() if start is None else float(start)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float | None:
        """Seconds left (may be negative), or None when unlimited."""
        return None if self.max_time is None else self.max_time - self.elapsed()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def check(self, where: str = "") -> None:
        """Raise :class:`StopOptimization` once the budget is spent."""
        if self.expired():
            at = f" {where}" if where else ""
            raise StopOptimization(f"time limit of {self.max_time:g} s reached{at}")


def format_terms(terms: dict[str, float]) -> str:
    """``"loss 0.1234 sim 0.1200 ..."`` with 4 significant digits."""
    return " ".join(f"{k} {v:.4g}" if math.isfinite(v) else f"{k} {v}" for k, v in terms.items())


class ProgressLine:
    """A single carriage-return line per stage on ``stream`` (stderr by default).

    ``update`` redraws at most every ``interval`` seconds; ``close`` draws the final state and ends
    the line. Disabled instances do nothing.
    """

    def __init__(
        self,
        label: str,
        total: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 0.2,
    ):
        self.label = label
        self.total = int(total)
        self.enabled = bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.interval = float(interval)
        self._last_draw = -math.inf
        self._start = time.perf_counter()
        self._text = ""
        self._width = 0

    def _draw(self, text: str, end: str = "") -> None:
        pad = " " * max(0, self._width - len(text))
        self.stream.write("\r" + text + pad + end)
        self.stream.flush()
        self._width = len(text)

    def update(self, iteration: int, terms: dict[str, float], force: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._start
        self._text = (
            f"{self.label} it {iteration}/{self.total} {format_terms(terms)} [{elapsed:.1f}s]"
        )
        now = time.perf_counter()
        if force or now - self._last_draw >= self.interval:
            self._draw(self._text)
            self._last_draw = now

    def close(self, note: str | None = None) -> None:
        if not self.enabled:
            return
        text = self._text or f"{self.label}"
        if note:
            text = f"{text} ({note})"
        self._draw(text, end="\n")
