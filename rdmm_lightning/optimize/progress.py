"""Wall-clock budget and progress display of the optimisers (a tqdm bar on a terminal, one line
per stage in a log)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Deadline", "ProgressLine", "StopOptimization", "format_terms"]


class StopOptimization(Exception):
    """Raised inside an objective to end the optimisation early; ``reason`` is one line and
    ``kind`` its class: ``"time limit"`` (the whole budget is used up), ``"time share"`` (a
    stage's or scale's share of it is), ``"non-finite"`` or ``"stopped"``."""

    def __init__(self, reason: str, kind: str = "stopped"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


Clock = Callable[[], float]


class Deadline:
    """Wall-clock budget: ``max_time`` seconds from ``start`` (default: now; None: unlimited).

    ``clock`` is the time source (``time.perf_counter``; tests inject a fake one). Parts of a
    budget are Deadlines too: :meth:`share` gives one stage or scale part of the time left,
    :meth:`less` keeps time back for later work (the final shoot, writing the outputs). A part
    never ends after its parent, and :meth:`check` names the parent when that is what ran out,
    so a stop says ``"time limit of 20 s reached ..."`` or ``"time share of 1.5 s used ..."``.
    """

    def __init__(
        self, max_time: float | None, start: float | None = None, *, clock: Clock | None = None
    ):
        if max_time is not None and not (isinstance(max_time, int | float) and max_time > 0):
            raise ValueError(
                f"max_time must be a positive number of seconds or None; got {max_time}"
            )
        self.clock: Clock = clock or time.perf_counter
        self.max_time = None if max_time is None else float(max_time)
        self.start = self.clock() if start is None else float(start)
        self.end = None if self.max_time is None else self.start + self.max_time
        self.kind = "time limit"
        self.parent: Deadline | None = None
        self._rate: float | None = None

    @property
    def rate(self) -> float | None:
        """Seconds per cost unit of work measured on this budget so far (None: not yet), shared
        by all its parts (:mod:`.budget`), so a later stage predicts its cost from an earlier
        one's."""
        return self._root()._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self._root()._rate = value

    def _root(self) -> Deadline:
        root = self
        while root.parent is not None:
            root = root.parent
        return root

    @classmethod
    def of(cls, value: float | Deadline | None) -> Deadline:
        """``value`` itself when it is a Deadline (a budget shared with the caller), else a new
        one of ``value`` seconds from now."""
        return value if isinstance(value, Deadline) else cls(value)

    def _part(self, end: float | None, kind: str, max_time: float | None) -> Deadline:
        part = Deadline(None, clock=self.clock)
        if self.end is not None:
            end = self.end if end is None else min(end, self.end)
        part.end, part.kind, part.max_time, part.parent = end, kind, max_time, self
        return part

    def share(self, seconds: float | None) -> Deadline:
        """A part of this budget for one stage or scale: it ends ``seconds`` from now, or with
        this budget if that is sooner (None: the rest of this budget)."""
        if seconds is None:
            return self._part(None, self.kind, self.max_time)
        seconds = max(0.0, float(seconds))
        return self._part(self.clock() + seconds, "time share", seconds)

    def less(self, seconds: float) -> Deadline:
        """This budget less ``seconds`` kept back for later work (unlimited stays unlimited);
        its stops still read ``"time limit of <max_time> s"``."""
        end = None if self.end is None else self.end - max(0.0, float(seconds))
        return self._part(end, self.kind, self.max_time)

    def elapsed(self) -> float:
        """Seconds since this budget (or part) started."""
        return self.clock() - self.start

    def remaining(self) -> float | None:
        """Seconds left (may be negative), or None when unlimited."""
        return None if self.end is None else self.end - self.clock()

    def expired(self, need: float = 0.0) -> bool:
        """True once fewer than ``need`` seconds are left (``need`` 0: once the time is up)."""
        left = self.remaining()
        return left is not None and left <= need

    def check(self, where: str = "", need: float = 0.0) -> None:
        """Raise :class:`StopOptimization` once fewer than ``need`` seconds are left (the
        expected cost of the next step: work that cannot finish in time is not started)."""
        if self.parent is not None:
            self.parent.check(where, need)
        if self.expired(need):
            at = f" {where}" if where else ""
            if self.kind == "time share":
                message = f"time share of {self.max_time:.3g} s used{at}"
            else:
                message = f"time limit of {self.max_time:g} s reached{at}"
            raise StopOptimization(message, self.kind)


def format_terms(terms: dict[str, float]) -> str:
    """``"loss 0.1234 sim 0.1200 ..."`` with 4 significant digits."""
    return " ".join(f"{k} {v:.4g}" if math.isfinite(v) else f"{k} {v}" for k, v in terms.items())


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


class ProgressLine:
    """Progress of one optimisation stage on ``stream`` (stderr by default).

    On a terminal: a tqdm bar (iterations done of ``total``, rate, ETA, the current loss terms)
    redrawn at most every ``interval`` seconds. Anywhere else (a log file, a pipe, a notebook's
    captured stderr): exactly one line per stage, written by :meth:`close`, so logs never fill
    with redraws. ``terminal`` forces either form (default: ``stream.isatty()``). Disabled
    instances do nothing.
    """

    def __init__(
        self,
        label: str,
        total: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 0.2,
        terminal: bool | None = None,
    ):
        self.label = label
        self.total = int(total)
        self.enabled = bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.terminal = _is_terminal(self.stream) if terminal is None else bool(terminal)
        self._start = time.perf_counter()
        self._iteration = 0
        self._terms: dict[str, float] = {}
        self._bar = None
        if self.enabled and self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=label,
                file=self.stream,
                mininterval=float(interval),
                unit="it",
                leave=True,
                dynamic_ncols=True,
            )

    def update(self, iteration: int, terms: dict[str, float], force: bool = False) -> None:
        """Record the state after an objective evaluation at L-BFGS ``iteration``."""
        if not self.enabled:
            return
        self._iteration, self._terms = int(iteration), dict(terms)
        if self._bar is None:
            return
        self._bar.set_postfix_str(format_terms(terms), refresh=False)
        step = min(self._iteration, self.total) - self._bar.n
        if step > 0:
            self._bar.update(step)
        if force:
            self._bar.refresh()

    def summary(self, note: str | None = None) -> str:
        """``"<label> it I/N <terms> [T s] (note)"``: the stage's final state in one line."""
        elapsed = time.perf_counter() - self._start
        terms = format_terms(self._terms)
        text = f"{self.label} it {self._iteration}/{self.total}{' ' + terms if terms else ''}"
        text = f"{text} [{elapsed:.1f}s]"
        return f"{text} ({note})" if note else text

    def close(self, note: str | None = None) -> None:
        """End the stage: close the bar (with ``note``), or write the one summary line."""
        if not self.enabled:
            return
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(f"{format_terms(self._terms)} ({note})", refresh=False)
            self._bar.close()
            self._bar = None
            return
        self.stream.write(self.summary(note) + "\n")
        self.stream.flush()
