"""Splitting a wall-clock budget (:class:`~.progress.Deadline`) across the stages and scales of
a registration, and the record of what each scale did.

The expected cost of one objective evaluation at a scale is measured in *cost units*
(:func:`evaluation_cost`): the scale's image voxels (warp and similarity: all of an affine
evaluation) plus, for a deformable model, ``factor * solver steps * parameter voxels``
(shooting and its backward pass; :data:`DEFORMABLE_COST_FACTOR`), plus fixed overheads. Before
a deformable stage the affine stage gets the share of the time left that its planned work is of
both stages', at least :data:`AFFINE_MIN_SHARE` (:func:`split_budget`). Within a stage each
scale, when it starts, gets the share of the time left that its planned work (cost x planned
iterations) is of the planned work to come, less a reserve for the step after the last scale
(the final shoot); the last scale gets all that is left and keeps the final step's time back
itself (:class:`ScaleBudget`). The seconds per cost unit are measured as the work runs and
shared by all parts of a budget (:attr:`Deadline.rate <.progress.Deadline.rate>`), so the
reserve, the cost of the next evaluation and whether a scale can run at all are predictions
from the work already done: an evaluation that cannot finish in the time left is not started
(:meth:`Deadline.check <.progress.Deadline.check>` with ``need``), and a stage ends before a
scale whose first evaluation could not.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .progress import Deadline

__all__ = [
    "AFFINE_MIN_SHARE",
    "DEFORMABLE_COST_FACTOR",
    "EVALUATION_OVERHEAD",
    "FINAL_STEP",
    "STEP_OVERHEAD",
    "STOP_REASONS",
    "ScaleBudget",
    "ScaleRecord",
    "evaluation_cost",
    "iterations_done",
    "split_budget",
    "stop_summary",
    "with_defaults",
]

DEFORMABLE_COST_FACTOR: dict[str, float] = {"rdmm": 30.0, "lddmm": 15.0, "svf": 10.0}
"""Cost units per solver step and parameter voxel of a deformable evaluation, relative to one
image voxel of warp + similarity (measured ratios on a CPU: RDMM about 30, LDDMM about half)."""

EVALUATION_OVERHEAD = 8192.0
"""Fixed cost of one evaluation, in image voxels (an affine evaluation on 12x16x16 took about
5 ms on one CPU thread, on 24x32x32 7.5 ms, on 48x64x64 70 ms)."""

STEP_OVERHEAD = 4096.0
"""Fixed cost of one solver step, in parameter voxels (on small grids a step costs more than
its voxels: a 12x16x16 RDMM evaluation took 0.15 s on one CPU thread, a 24x32x32 one 1.05 s,
7x for 8x the voxels and 2x the steps)."""

AFFINE_MIN_SHARE = 0.35
"""The least fraction of a time limit that an affine stage gets before a deformable one. Its
planned work alone would give it about 3%, but a poor start costs more than a few deformable
iterations, and time the affine stage does not use is left to the deformable one. Measured on
an IXI pair (120x120x90, 2 threads, --max-time 60, deformable finest scale out of reach): mean
Dice 0.38 with 15%, 0.47 with 35%."""

FINAL_STEP = 0.5
"""The step after the last scale as a fraction of one evaluation there (the final shoot runs
forward only: measured 0.3 s against 1.05 s per RDMM evaluation on 24x32x32; the final affine
warp is cheaper still)."""

STOP_REASONS = (
    "converged",
    "iterations",
    "evaluations",
    "time share",
    "time limit",
    "non-finite",
    "not run",
)
"""Why a scale ended: L-BFGS converged (tolerance); the planned iterations were done; the
evaluation cap was reached; the scale's share of the time limit was used; the whole time limit
was; a non-finite loss or gradient; a scale not run because an earlier one ended the stage."""


def evaluation_cost(
    shape: Sequence[int],
    param_shape: Sequence[int] | None = None,
    steps: int = 0,
    factor: float = 0.0,
) -> float:
    """Cost units of one evaluation: ``prod(shape) + EVALUATION_OVERHEAD``, plus for a
    deformable model ``factor * steps * (prod(param_shape) + STEP_OVERHEAD)``."""
    cost = float(math.prod(shape)) + EVALUATION_OVERHEAD
    if param_shape is not None:
        cost += float(factor) * int(steps) * (float(math.prod(param_shape)) + STEP_OVERHEAD)
    return cost


def with_defaults(fn: Callable[..., Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``fn``'s keyword-only defaults updated by the entries of ``given`` that it accepts (the
    arguments an optimiser will run with, for planning its work)."""
    out = {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    out.update({k: v for k, v in given.items() if k in out})
    return out


def iterations_done(stages: Sequence[Mapping[str, Any]], stage: str) -> int:
    """L-BFGS iterations that ``stage`` (``"affine"`` or a model) ran, over its scales
    (``stages``: :class:`ScaleRecord` dicts)."""
    return sum(int(r["iterations"]) for r in stages if r["stage"] == stage)


def stop_summary(records: Sequence[ScaleRecord], notes: Sequence[str]) -> str | None:
    """A stage's ``stopped`` line: the scales its time shares cut short, then ``notes`` (the
    messages of the stops that ended the stage); None when nothing stopped early."""
    cut = [f"{r.scale:g}" for r in records if r.stopped == "time share"]
    parts = list(notes)
    if cut:
        scales = "scale" + "s" * (len(cut) > 1)
        parts.insert(0, f"time shares used up at {records[0].stage} {scales} {', '.join(cut)}")
    return "; ".join(parts) or None


def split_budget(deadline: Deadline, works: Sequence[float], floor: float = 0.0) -> Deadline:
    """The part of ``deadline`` for the first of several stages run one after the other, whose
    planned work (cost units) is ``works``: a share proportional to ``works[0]``, at least the
    fraction ``floor`` of the time left (the whole budget for an unlimited one or a single
    stage). Time a stage does not use is left to the next ones."""
    left, total = deadline.remaining(), float(sum(works))
    if left is None or len(works) < 2 or total <= 0:
        return deadline.share(None)
    return deadline.share(max(left, 0.0) * max(float(floor), float(works[0]) / total))


@dataclass
class ScaleRecord:
    """What one scale of a stage did (a row of ``metrics.json``'s ``"stages"``).

    Attributes:
        stage: ``"affine"`` or the deformable model.
        scale: the scale factor.
        shape: the scale's image grid.
        planned: planned L-BFGS iterations; ``iterations`` done; ``evaluations`` of the
            objective (line-search trials included).
        stopped: one of :data:`STOP_REASONS`.
        time_s: seconds spent; ``budget_s`` the scale's share of the time limit (None: none).
    """

    stage: str
    scale: float
    shape: list[int]
    planned: int
    iterations: int = 0
    evaluations: int = 0
    stopped: str = "not run"
    time_s: float = 0.0
    budget_s: float | None = None

    def update(self, outcome: Any) -> None:
        """Fill in from an :class:`~.lbfgs.LbfgsOutcome`."""
        self.iterations, self.evaluations = int(outcome.iterations), int(outcome.evaluations)
        self.stopped, self.time_s = str(outcome.reason), float(outcome.time_s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScaleBudget:
    """Shares of ``deadline`` for the scales of one stage (see the module docstring).

    The time per cost unit is :attr:`Deadline.rate <.progress.Deadline.rate>`, shared with the
    stages before (an affine stage's measurements predict a deformable one's first scale). With
    a rate known, a scale whose one evaluation and final step would not fit in the time left
    cannot run: the stage ends at the scale before it (:meth:`last_scale`), whose final step is
    far cheaper, and the time goes to the scales that can run.

    Args:
        deadline: the stage's budget.
        costs: cost units of one evaluation at each scale.
        iterations: planned iterations per scale.
        final: the work after the last scale (the final shoot or warp), as a fraction of one
            evaluation at the last scale run (:data:`FINAL_STEP`).
    """

    def __init__(
        self,
        deadline: Deadline,
        costs: Sequence[float],
        iterations: Sequence[int],
        final: float = 0.0,
    ):
        if len(costs) != len(iterations):
            raise ValueError(f"one cost per scale: {len(costs)} costs, {len(iterations)} scales")
        self.deadline = deadline
        self.costs = [float(c) for c in costs]
        self.iterations = [int(n) for n in iterations]
        self.final = float(final)

    @property
    def rate(self) -> float | None:
        """Measured seconds per cost unit (None: not yet)."""
        return self.deadline.rate

    def need(self, k: int) -> float:
        """Predicted seconds of one evaluation at scale ``k`` (0 until a rate is measured)."""
        return 0.0 if self.rate is None else self.rate * self.costs[k]

    def last_scale(self) -> int:
        """The finest scale that can still run: all of them until a rate is measured or without
        a limit; else the finest whose evaluation plus final step fits in the time left (-1:
        none)."""
        left = self.deadline.remaining()
        if left is None or self.rate is None:
            return len(self.costs) - 1
        fits = [j for j in range(len(self.costs)) if self.need(j) * (1 + self.final) <= left]
        return fits[-1] if fits else -1

    def reserve(self) -> float:
        """Predicted seconds of the step after the last scale that can run (0 without a rate)."""
        last = self.last_scale()
        return 0.0 if last < 0 else self.need(last) * self.final

    def after(self, k: int) -> float:
        """Evaluations' worth of time that must be left after each evaluation at scale ``k``:
        the final step's, at the last scale that can run (whose own evaluations measure it
        best)."""
        return self.final if k >= self.last_scale() else 0.0

    def part(self, k: int) -> Deadline:
        """The deadline of scale ``k``, taken when it starts: for the last scale that can run
        all the time left (it keeps back the final step itself, :meth:`after`); for an earlier
        one its share of the planned work up to that scale, the final step set aside."""
        last = self.last_scale()
        if k >= last or self.deadline.remaining() is None:
            return self.deadline.share(None)
        works = [c * n for c, n in zip(self.costs[k : last + 1], self.iterations[k : last + 1])]
        return split_budget(self.deadline.less(self.reserve()), works)

    def too_short(self, k: int, where: str) -> str | None:
        """Why scale ``k`` cannot run (one line naming the limit and ``where``), or None."""
        if k <= self.last_scale():
            return None
        d, need = self.deadline, self.need(k)
        limit = (
            f"time share of {d.max_time:.3g} s" if d.kind == "time share"
            else f"time limit of {d.max_time:g} s"
        )  # fmt: skip
        ended = "; ended at the scale before" if k > 0 else ""
        return (
            f"{limit}: {max(d.remaining() or 0.0, 0.0):.3g} s left, too little for one "
            f"evaluation at {where} (about {need:.3g} s){ended}"
        )

    def record(self, k: int, seconds: float, evaluations: int) -> None:
        """Measure the rate from scale ``k``'s evaluations (the latest measurement wins)."""
        if evaluations > 0 and seconds > 0 and self.costs[k] > 0:
            self.deadline.rate = seconds / (evaluations * self.costs[k])
