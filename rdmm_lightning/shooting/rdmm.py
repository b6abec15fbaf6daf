r"""RDMM shooting (paper Thm. 2, Eq. 3.10).

State ``(m, h, phi^{-1}[, phi])`` with pre-weights ``h: (B, N, *S)``:

* ``w_i = S h_i = (G_sigma * h_i) / (G_sigma * 1)``,
* ``v = sum_i w_i K_{sigma_i} * (w_i m)`` and ``nu_i = K_{sigma_i} * (w_i m)``,
* ``dm/dt = -(div(v) m + Dv^T m + Dm v) + sum_i S^T(m . nu_i) grad h_i``,
* ``dh_i/dt = -<grad h_i, v>`` (``h_mode="pde"``, default) or
  ``h(t) = h(0) o phi^{-1}(t)`` by interpolation (``h_mode="interpolate"``),
* ``d phi^{-1}/dt = -D(phi^{-1}) v``, ``d phi/dt = v(phi)``.

``S^T`` is the exact adjoint of the normalised pre-weight smoothing, and the gradient of the
*advected* ``h(t)`` enters the extra term (as in the paper): together these keep the energy
``<m, v>`` conserved to round-off plus time-stepping error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..grid import Grid
from ..ops.channels import channels
from ..ops.finite_differences import central_diff
from ..ops.grid import identity_map
from ..ops.smoothing import FourierKernels, fourier_gaussian_kernels, pre_weight_smoothing
from ..ops.warp import sample_field
from ..options import HMode, values
from .result import ShootingResult, validate_momentum, validate_pre_weights
from .solver import SolverOptions, integrate_shot
from .terms import advect_map_rhs, epdiff_rhs, lagrangian_rhs, region_specific_velocity

__all__ = ["RDMMDynamics", "shoot_rdmm", "H_MODES"]

H_MODES = values(HMode)


class RDMMDynamics(nn.Module):
    """Right-hand side of RDMM shooting.

    State: ``(m, h, phi_inv[, phi])`` for ``h_mode="pde"``; ``(m, h0, phi_inv[, phi])`` with
    ``dh0/dt = 0`` for ``h_mode="interpolate"`` (``h(t) = h0 o phi_inv(t)``).
    """

    def __init__(
        self,
        kernels: FourierKernels,
        weight_sigma: float,
        spacing: Sequence[float],
        forward_map: bool,
        h_mode: str = "pde",
    ):
        super().__init__()
        if h_mode not in H_MODES:
            raise ValueError(f"h_mode must be one of {H_MODES}; got {h_mode!r}")
        self.kernels = kernels
        self.weight_sigma = float(weight_sigma)
        self.spacing = tuple(spacing)
        self.forward_map = forward_map
        self.h_mode = h_mode
        self.smoothing = pre_weight_smoothing(
            kernels.shape, self.weight_sigma, self.spacing, kernels.dtype, kernels.device
        )  # resolved here: the right-hand side looks nothing up (torch.compile traces it)

    def weights(self, h: Tensor) -> Tensor:
        return self.smoothing(h)

    def velocity(self, m: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """``v: (B, D, *S)`` and ``nu: (B, N, D, *S)`` for momentum ``m`` and pre-weights ``h``."""
        return region_specific_velocity(m, self.weights(h), self.kernels)

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        m, h_state, phi_inv = state[0], state[1], state[2]
        if self.h_mode == "pde":
            h = h_state
        else:
            h = sample_field(h_state, phi_inv, self.spacing, padding_mode="border")
        v, nu = self.velocity(m, h)
        ndim = len(self.spacing)
        # Channels are taken with unbind (one stacking backward, no full-size zero fill per
        # slice); sums over the small axes D and N are accumulated in place (addcmul_ saves only
        # its factors, never the accumulator): no (B, N, D, *S) temporaries.
        nu_d, m_d = channels(nu, dim=2), channels(m, keepdim=True)
        m_dot_nu = nu_d[0] * m_d[0]  # (B, N, *S): m . nu_i
        for d in range(1, ndim):
            m_dot_nu.addcmul_(nu_d[d], m_d[d])
        del nu, nu_d  # the largest temporary: free it before the next ones (no_grad)
        coupling = channels(self.smoothing.adjoint(m_dot_nu))
        del m_dot_nu
        v_k = channels(v, keepdim=True)
        extra_k, dh = [], None
        for k in range(ndim):
            grad_k = central_diff(h, k, self.spacing[k], ndim, "neumann")  # (B, N, *S)
            grad_ki = channels(grad_k)
            extra = coupling[0] * grad_ki[0]  # sum_i S^T(m . nu_i) d_k h_i
            for i in range(1, len(grad_ki)):
                extra.addcmul_(coupling[i], grad_ki[i])
            extra_k.append(extra)
            if self.h_mode == "pde":
                dh = grad_k * v_k[k] if dh is None else dh.addcmul_(grad_k, v_k[k])
        dm = epdiff_rhs(m, v, self.spacing).add_(torch.stack(extra_k, dim=1))
        dh = dh.neg_() if self.h_mode == "pde" else torch.zeros_like(h_state)
        out = (dm, dh, advect_map_rhs(phi_inv, v, self.spacing))
        if self.forward_map:
            out = out + (lagrangian_rhs(state[3], v, self.spacing),)
        return out


def shoot_rdmm(
    m0: Tensor,
    h0: Tensor,
    sigmas: Sequence[float],
    weight_sigma: float,
    spacing: Sequence[float] | None = None,
    solver: SolverOptions | None = None,
    *,
    forward_map: bool = False,
    h_mode: str = "pde",
    times: Tensor | None = None,
) -> ShootingResult:
    """Shoot RDMM from the identity.

    Args:
        m0: initial momentum ``(B, D, *S)``.
        h0: initial pre-weights ``(B, N, *S)``, ``h >= 0`` and ``sum_i h_i^2 = 1`` per voxel
            (see :func:`~rdmm_lightning.ops.pre_weights.normalize_pre_weights`).
        sigmas: the N Gaussian stds (domain units).
        weight_sigma: std of the pre-weight smoothing ``G_sigma`` (0 disables it).
        spacing: domain spacing (parity if omitted).
        solver: integration options.
        forward_map: also integrate the forward map ``phi``.
        h_mode: ``"pde"`` (advect h by its transport equation) or ``"interpolate"``.
        times: output times for a trajectory (default: only t = 1).
    """
    validate_momentum(m0)
    sigmas = tuple(float(s) for s in sigmas)
    validate_pre_weights(h0, m0, len(sigmas))
    solver = solver or SolverOptions()
    spacing = Grid.from_domain_spacing(m0.shape[2:], spacing).domain_spacing
    kernels = fourier_gaussian_kernels(
        m0.shape[2:], sigmas, spacing, dtype=m0.dtype, device=m0.device
    )
    dyn = RDMMDynamics(kernels, weight_sigma, spacing, forward_map, h_mode)
    ident = identity_map(m0.shape[2:], spacing, dtype=m0.dtype, device=m0.device)
    ident = ident.expand(m0.shape[0], *ident.shape[1:])
    state = (m0, h0, ident.clone()) + ((ident.clone(),) if forward_map else ())
    w0 = dyn.weights(h0)
    v0, _ = region_specific_velocity(m0, w0, kernels)
    sol = integrate_shot(dyn, state, solver, v0, spacing, times)
    h1 = sol[1][-1]
    if h_mode == "interpolate":
        h1 = sample_field(h0, sol[2][-1], spacing, padding_mode="border")
    traj = None
    if times is not None:
        traj = {"m": sol[0], "h": sol[1], "phi_inv": sol[2]}
        if forward_map:
            traj["phi"] = sol[3]
    return ShootingResult(
        phi_inv=sol[2][-1],
        phi=sol[3][-1] if forward_map else None,
        momentum=sol[0][-1],
        velocity0=v0,
        spacing=spacing,
        pre_weights=h1,
        weights0=w0,
        trajectory=traj,
    )
