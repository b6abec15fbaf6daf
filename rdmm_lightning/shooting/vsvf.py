r"""vSVF: a stationary velocity ``v = K * m0`` integrated as
``d phi^{-1}/dt = -D(phi^{-1}) v`` (and ``d phi/dt = v(phi)`` for the forward map)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..grid import Grid
from ..ops.grid import identity_map
from ..ops.smoothing import multi_gaussian_smooth
from .result import ShootingResult, validate_momentum
from .solver import SolverOptions, integrate, steps_for_velocity
from .terms import advect_map_rhs, lagrangian_rhs

__all__ = ["VelocityAdvection", "integrate_velocity", "shoot_vsvf"]


class VelocityAdvection(nn.Module):
    """Right-hand side for a stationary velocity; state ``(phi_inv[, phi])``."""

    def __init__(self, v: Tensor, spacing: Sequence[float], forward_map: bool):
        super().__init__()
        self.v = v
        self.spacing = tuple(spacing)
        self.forward_map = forward_map

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        out = (advect_map_rhs(state[0], self.v, self.spacing),)
        if self.forward_map:
            out = out + (lagrangian_rhs(state[1], self.v, self.spacing),)
        return out


def integrate_velocity(
    v: Tensor,
    spacing: Sequence[float] | None = None,
    solver: SolverOptions | None = None,
    *,
    forward_map: bool = False,
    times: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor] | None]:
    """Integrate the stationary velocity ``v: (B, D, *S)`` from the identity.

    Returns ``(phi_inv, phi or None, trajectory or None)`` at t = 1.
    """
    validate_momentum(v, "v")
    solver = solver or SolverOptions()
    spacing = Grid.from_domain_spacing(v.shape[2:], spacing).domain_spacing
    solver = steps_for_velocity(solver, v, spacing)
    ident = identity_map(v.shape[2:], spacing, dtype=v.dtype, device=v.device)
    ident = ident.expand(v.shape[0], *ident.shape[1:])
    state: tuple[Tensor, ...] = (ident.clone(),)
    if forward_map:
        state = state + (ident.clone(),)
    if solver.adjoint:
        # no parameters inside: gradients w.r.t. v flow through a state entry with zero rate
        dyn = _AdjointVelocityAdvection(spacing, forward_map)
        sol = integrate(dyn, (v,) + state, solver, times)[1:]
    else:
        sol = integrate(VelocityAdvection(v, spacing, forward_map), state, solver, times)
    traj = None
    if times is not None:
        traj = {"phi_inv": sol[0]}
        if forward_map:
            traj["phi"] = sol[1]
    return sol[0][-1], (sol[1][-1] if forward_map else None), traj


class _AdjointVelocityAdvection(nn.Module):
    """State ``(v, phi_inv[, phi])`` with ``dv/dt = 0``, for the adjoint method."""

    def __init__(self, spacing: Sequence[float], forward_map: bool):
        super().__init__()
        self.spacing = tuple(spacing)
        self.forward_map = forward_map

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        v = state[0]
        out = (torch.zeros_like(v), advect_map_rhs(state[1], v, self.spacing))
        if self.forward_map:
            out = out + (lagrangian_rhs(state[2], v, self.spacing),)
        return out


def shoot_vsvf(
    m0: Tensor,
    sigmas: Sequence[float],
    weights: Sequence[float],
    spacing: Sequence[float] | None = None,
    solver: SolverOptions | None = None,
    *,
    forward_map: bool = False,
    times: Tensor | None = None,
) -> ShootingResult:
    """vSVF shooting: ``v = K * m0`` with ``K = sum_i weights_i G_{sigma_i}``, integrated from
    the identity. ``m0: (B, D, *S)``; sigmas in domain units."""
    validate_momentum(m0)
    spacing = Grid.from_domain_spacing(m0.shape[2:], spacing).domain_spacing
    v = multi_gaussian_smooth(m0, sigmas, weights, spacing)
    phi_inv, phi, traj = integrate_velocity(
        v, spacing, solver, forward_map=forward_map, times=times
    )
    return ShootingResult(
        phi_inv=phi_inv, phi=phi, momentum=m0, velocity0=v, spacing=spacing, trajectory=traj
    )
