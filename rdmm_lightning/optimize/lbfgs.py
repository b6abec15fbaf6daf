"""A guarded L-BFGS run (``torch.optim.LBFGS`` with a strong-Wolfe line search).

The objective is evaluated inside the closure; every evaluation is checked:

* the wall-clock :class:`~.progress.Deadline`, before the evaluation and with the expected
  cost of one evaluation (the mean of those so far, first the caller's prediction ``need``), so
  an evaluation that cannot finish in time is not started (``StopOptimization("time ...")``);
* a non-finite loss or gradient (``StopOptimization("non-finite ...")``).

The parameters with the lowest finite loss seen so far are snapshotted, and restored when the run
ends (normally or early), so a stopped run never leaves the parameters at a failed trial point.
A non-finite line-search trial first restarts L-BFGS from that snapshot (see :func:`run_lbfgs`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .progress import Deadline, ProgressLine, StopOptimization

__all__ = ["LbfgsOptions", "LbfgsOutcome", "run_lbfgs"]

Objective = Callable[[], tuple[Tensor, dict[str, float]]]


@dataclass(frozen=True)
class LbfgsOptions:
    """Settings of ``torch.optim.LBFGS`` used by the optimisers.

    Attributes:
        history_size: number of correction pairs (memory ~ ``2 * history_size`` parameter copies).
        max_eval_factor: at most ``max_eval_factor * iterations`` objective evaluations per scale
            (line-search trials included).
        tolerance_change: stop when the loss or the step changes by less (absolute).
        tolerance_grad: stop when the largest gradient entry is below this (absolute).
        max_restarts: restarts from the best parameters after a non-finite line-search trial.
    """

    history_size: int = 10
    max_eval_factor: float = 1.5
    max_restarts: int = 2
    tolerance_change: float = 1e-9
    tolerance_grad: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            ("history_size", self.history_size >= 1, ">= 1"),
            ("max_eval_factor", self.max_eval_factor >= 1, ">= 1"),
            ("max_restarts", self.max_restarts >= 0, ">= 0"),
            ("tolerance_change", self.tolerance_change >= 0, ">= 0"),
            ("tolerance_grad", self.tolerance_grad >= 0, ">= 0"),
        )
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"lbfgs {name} must be {want}; got {getattr(self, name)}")


@dataclass
class LbfgsOutcome:
    """Result of :func:`run_lbfgs`: ``stopped`` is None or the one-line reason of an early stop;
    ``reason`` says why the run ended (one of :data:`~.budget.STOP_REASONS`); ``time_s`` is
    the run's duration, ``evaluation_s`` the part of it spent in evaluations (both on the
    deadline's clock)."""

    stopped: str | None
    best_loss: float
    iterations: int
    evaluations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    kept_iteration: int | None = None
    kept_feasible: bool = True
    reason: str = "iterations"
    time_s: float = 0.0
    evaluation_s: float = 0.0


def _all_finite(tensors: Sequence[Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


class _NonFinite(StopOptimization):
    """A non-finite loss or gradient; ``at_start`` when it occurred at the starting point of an
    L-BFGS run (the best parameters so far), not at a line-search trial."""

    def __init__(self, reason: str, at_start: bool):
        super().__init__(reason, "non-finite")
        self.at_start = at_start


def run_lbfgs(
    params: Sequence[Tensor],
    objective: Objective,
    iterations: int,
    *,
    deadline: Deadline | None = None,
    progress: ProgressLine | None = None,
    options: LbfgsOptions | None = None,
    info: dict[str, Any] | None = None,
    where: str = "",
    feasible: Callable[[dict[str, float]], bool] | None = None,
    need: float = 0.0,
    after: float = 0.0,
) -> LbfgsOutcome:
    """Minimise ``objective()`` over ``params`` (leaf tensors with ``requires_grad``).

    A non-finite loss at a line-search trial (a step into a region where shooting blows up)
    restarts L-BFGS from the best parameters with a fresh history, at most
    ``options.max_restarts`` times; a non-finite loss at the starting point of a run, or one
    more after the restarts, ends the run with ``stopped`` set.

    Args:
        params: the parameters, modified in place (left at the best point seen).
        objective: returns ``(loss, terms)``: a scalar tensor and a dict of floats to log.
        iterations: maximal number of L-BFGS iterations (restarts included).
        deadline: wall-clock budget checked before every evaluation.
        need: predicted seconds of one evaluation, used until one is measured (0: start the
            first evaluation whenever the deadline has not passed).
        after: time the deadline must still leave after each evaluation, in evaluations (the
            work that follows the run, e.g. a final shoot of half an evaluation: 0.5).
        progress: progress line updated after every evaluation.
        options: L-BFGS settings.
        info: constant entries added to every history record (e.g. the scale).
        where: prefix naming the stage in stop messages (e.g. ``"lddmm scale 0.5, "``).
        feasible: ``feasible(terms)`` tells whether an evaluated point is admissible (e.g. has
            no folds). The kept parameters are the best *feasible* point seen, or the best
            point overall when none was feasible (``outcome.kept_feasible`` is then False).

    Returns:
        An :class:`LbfgsOutcome`; its history has one record per iteration (the loss terms at
        the accepted point, the evaluation count and the time so far; iteration 0 is the
        starting point; ``restarts`` counts the restarts so far). ``reason`` is
        ``"iterations"`` (``iterations`` done), ``"evaluations"`` (the evaluation cap),
        ``"converged"`` (a tolerance), or the ``kind`` of the :class:`StopOptimization` that
        ended it (``"time limit"``, ``"time share"``, ``"non-finite"``).
    """
    options = options or LbfgsOptions()
    deadline = deadline or Deadline(None)
    info = dict(info or {})
    iterations = int(iterations)
    outcome = LbfgsOutcome(stopped=None, best_loss=math.inf, iterations=0, evaluations=0)
    if iterations <= 0:
        return outcome
    snaps: dict[bool, tuple[float, int, list[Tensor]]] = {}  # feasible? -> (loss, iter, params)
    start = time.perf_counter()
    clock = deadline.clock  # the budget's time line (real, or a test's fake clock)
    began_run = clock()

    def best() -> list[Tensor] | None:
        snap = snaps.get(True) or snaps.get(False)
        return None if snap is None else snap[2]

    offset, restarts, capped = 0, 0, False

    def closure_for(opt: torch.optim.LBFGS) -> Callable[[], Tensor]:
        state = opt.state[opt.param_groups[0]["params"][0]]
        calls = {"n": 0}

        def closure() -> Tensor:
            calls["n"] += 1
            iteration = offset + int(state.get("n_iter", 0))
            mean = outcome.evaluation_s / outcome.evaluations if outcome.evaluations else need
            where_now = f"at {where}iteration {iteration}; kept the last good parameters"
            deadline.check(where_now, need=mean * (1.0 + after))
            began = clock()
            opt.zero_grad()
            loss, terms = objective()
            outcome.evaluations += 1
            value = float(loss.detach())
            at_start = calls["n"] == 1
            if not math.isfinite(value):
                msg = _nonfinite_message("loss", terms, where, iteration)
                raise _NonFinite(msg, at_start)
            loss.backward()
            outcome.evaluation_s += clock() - began
            if not _all_finite([p.grad for p in params]):
                msg = _nonfinite_message("gradient", terms, where, iteration)
                raise _NonFinite(msg, at_start)
            ok = True if feasible is None else bool(feasible(terms))
            for key in {ok, False}:  # the overall best is tracked under False
                if key not in snaps or value < snaps[key][0]:
                    snaps[key] = (value, iteration, [p.detach().clone() for p in params])
            record = {**info, "iteration": iteration, "loss": value, **terms}
            record.update(evaluations=outcome.evaluations, restarts=restarts)
            record["time_s"] = time.perf_counter() - start
            if outcome.history and outcome.history[-1]["iteration"] == iteration:
                outcome.history[-1] = record
            else:
                outcome.history.append(record)
            outcome.iterations = iteration
            if progress is not None:
                progress.update(iteration, {"loss": value, **terms})
            return loss

        return closure

    try:
        while offset < iterations:
            remaining = iterations - offset
            max_eval = max(remaining + 1, int(options.max_eval_factor * remaining))
            opt = torch.optim.LBFGS(
                params,
                lr=1.0,
                max_iter=remaining,
                max_eval=max_eval,
                history_size=options.history_size,
                tolerance_grad=options.tolerance_grad,
                tolerance_change=options.tolerance_change,
                line_search_fn="strong_wolfe",
            )
            try:
                before = outcome.evaluations
                opt.step(closure_for(opt))
                capped = outcome.evaluations - before >= max_eval
                break
            except _NonFinite as bad:
                if bad.at_start or best() is None or restarts >= options.max_restarts:
                    raise
                restarts += 1
                offset = outcome.iterations + 1
                _restore(params, best())
    except StopOptimization as stop:
        outcome.stopped, outcome.reason = stop.reason, stop.kind
    else:
        if outcome.iterations >= iterations:
            outcome.reason = "iterations"
        else:
            outcome.reason = "evaluations" if capped else "converged"
    finally:
        outcome.time_s = clock() - began_run
        snap = snaps.get(True) or snaps.get(False)
        if snap is not None:
            _restore(params, snap[2])
            outcome.best_loss, outcome.kept_iteration = snap[0], snap[1]
            outcome.kept_feasible = True in snaps
    return outcome


def _restore(params: Sequence[Tensor], values: list[Tensor] | None) -> None:
    if values is None:
        return
    with torch.no_grad():
        for p, b in zip(params, values):
            p.copy_(b)


def _nonfinite_message(what: str, terms: dict[str, float], where: str, iteration: int) -> str:
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    which = f" in {', '.join(bad)}" if bad else ""
    return (
        f"non-finite {what}{which} at {where}iteration {iteration}; kept the last good parameters"
    )
