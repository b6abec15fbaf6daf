"""torchdiffeq glue: solver options and integration of tuple states over t in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

__all__ = ["SolverOptions", "integrate", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS"]

FIXED_STEP_METHODS = ("rk4", "euler", "midpoint")
ADAPTIVE_METHODS = ("dopri5",)


@dataclass(frozen=True)
class SolverOptions:
    """How to integrate a shooting system over t in [0, 1].

    Attributes:
        method: ``"rk4"`` (default), ``"euler"``, ``"midpoint"`` (fixed steps) or ``"dopri5"``
            (adaptive).
        num_steps: number of fixed steps per unit time (fixed-step methods).
        rtol, atol: tolerances (``dopri5``).
        adjoint: integrate gradients with the adjoint method (memory O(1) in the steps).
    """

    method: str = "rk4"
    num_steps: int = 10
    rtol: float = 1e-5
    atol: float = 1e-5
    adjoint: bool = False

    def __post_init__(self) -> None:
        if self.method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
            raise ValueError(
                f"solver method must be one of {FIXED_STEP_METHODS + ADAPTIVE_METHODS}; "
                f"got {self.method!r}"
            )
        if int(self.num_steps) < 1:
            raise ValueError(f"solver num_steps must be >= 1; got {self.num_steps}")
        if self.rtol <= 0 or self.atol <= 0:
            raise ValueError(f"solver rtol/atol must be > 0; got {self.rtol}, {self.atol}")


class _StepGrid:
    """Fixed-step grid: ``round(num_steps * |t1 - t0|)`` equal steps between the first and last
    requested time (works for the reversed integration of the adjoint too)."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps

    def __call__(self, func, y0, t: Tensor) -> Tensor:
        span = float(t[-1] - t[0])
        n = max(1, round(self.num_steps * abs(span)))
        grid = torch.linspace(float(t[0]), float(t[-1]), n + 1, dtype=t.dtype, device=t.device)
        if t.numel() <= 2:
            return grid
        # put the requested output times on the grid so outputs are not interpolated
        vals = torch.cat([grid, t[1:-1]]).sort(descending=span < 0).values
        keep = torch.ones_like(vals, dtype=torch.bool)
        keep[1:] = (vals[1:] - vals[:-1]).abs() > 1e-9 * abs(span)
        return vals[keep]


def integrate(
    dynamics: nn.Module,
    state: tuple[Tensor, ...],
    solver: SolverOptions,
    times: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """Integrate ``d state / dt = dynamics(t, state)`` from t = 0 to 1.

    Returns a tuple of tensors with a leading time dimension: the states at ``times``
    (default ``[0, 1]``).
    """
    ref = state[0]
    t = (
        torch.tensor([0.0, 1.0], dtype=ref.dtype, device=ref.device)
        if times is None
        else times.to(dtype=ref.dtype, device=ref.device)
    )
    kwargs: dict = {"method": solver.method}
    if solver.method in FIXED_STEP_METHODS:
        kwargs["options"] = {"grid_constructor": _StepGrid(solver.num_steps)}
    else:
        kwargs["rtol"] = solver.rtol
        kwargs["atol"] = solver.atol
    if solver.adjoint:
        return odeint_adjoint(dynamics, state, t, adjoint_params=(), **kwargs)
    return odeint(dynamics, state, t, **kwargs)
