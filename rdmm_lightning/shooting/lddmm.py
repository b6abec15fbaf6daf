r"""LDDMM shooting (EPDiff, paper Eq. 2.4).

State ``(m, phi^{-1}[, phi])``: ``v = K * m`` with a multi-Gaussian ``K``,
``dm/dt = -(div(v) m + Dv^T m + Dm v)`` (conservative form),
``d phi^{-1}/dt = -D(phi^{-1}) v``, ``d phi/dt = v(phi)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..grid import Grid
from ..ops.grid import identity_map
from ..ops.smoothing import FourierKernels, fft_convolve, fourier_gaussian_kernels
from .result import ShootingResult, validate_momentum
from .solver import SolverOptions, integrate_shot
from .terms import advect_map_rhs, epdiff_rhs, lagrangian_rhs

__all__ = ["EPDiffDynamics", "shoot_lddmm"]


class EPDiffDynamics(nn.Module):
    """Right-hand side of LDDMM shooting; state ``(m, phi_inv[, phi])``."""

    def __init__(self, kernels: FourierKernels, spacing: Sequence[float], forward_map: bool):
        super().__init__()
        self.kernels = kernels
        self.spacing = tuple(spacing)
        self.forward_map = forward_map

    def velocity(self, m: Tensor) -> Tensor:
        return fft_convolve(m, self.kernels)

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        m, phi_inv = state[0], state[1]
        v = self.velocity(m)
        out = (epdiff_rhs(m, v, self.spacing), advect_map_rhs(phi_inv, v, self.spacing))
        if self.forward_map:
            out = out + (lagrangian_rhs(state[2], v, self.spacing),)
        return out


def shoot_lddmm(
    m0: Tensor,
    sigmas: Sequence[float],
    weights: Sequence[float],
    spacing: Sequence[float] | None = None,
    solver: SolverOptions | None = None,
    *,
    forward_map: bool = False,
    times: Tensor | None = None,
) -> ShootingResult:
    """Shoot LDDMM from the identity with initial momentum ``m0: (B, D, *S)`` and
    ``K = sum_i weights_i G_{sigma_i}`` (sigmas in domain units)."""
    validate_momentum(m0)
    solver = solver or SolverOptions()
    spacing = Grid.from_domain_spacing(m0.shape[2:], spacing).domain_spacing
    kernels = fourier_gaussian_kernels(
        m0.shape[2:], sigmas, spacing, weights=weights, dtype=m0.dtype, device=m0.device
    )
    dyn = EPDiffDynamics(kernels, spacing, forward_map)
    ident = identity_map(m0.shape[2:], spacing, dtype=m0.dtype, device=m0.device)
    ident = ident.expand(m0.shape[0], *ident.shape[1:])
    state = (m0, ident.clone()) + ((ident.clone(),) if forward_map else ())
    velocity0 = dyn.velocity(m0)
    sol = integrate_shot(dyn, state, solver, velocity0, spacing, times)
    traj = None
    if times is not None:
        traj = {"m": sol[0], "phi_inv": sol[1]}
        if forward_map:
            traj["phi"] = sol[2]
    return ShootingResult(
        phi_inv=sol[1][-1],
        phi=sol[2][-1] if forward_map else None,
        momentum=sol[0][-1],
        velocity0=velocity0,
        spacing=spacing,
        trajectory=traj,
    )
