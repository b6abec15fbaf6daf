r"""Right-hand-side terms shared by the shooting models (pure functions on tensors).

Shapes: momentum and velocity ``(B, D, *S)``, maps ``(B, D, *S)``, scalar fields ``(B, N, *S)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.channels import channels
from ..ops.finite_differences import central_diff
from ..ops.smoothing import FourierKernels, weighted_convolve
from ..ops.warp import sample_field

MOMENTUM_BC = "zero"
"""Boundary treatment of the finite differences in the momentum terms: zero extension, the
summation-by-parts choice (see :func:`epdiff_rhs`)."""

__all__ = [
    "MOMENTUM_BC",
    "epdiff_rhs",
    "advect_map_rhs",
    "advect_scalar_rhs",
    "lagrangian_rhs",
    "region_specific_velocity",
]


def epdiff_rhs(m: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    r"""EPDiff right-hand side in conservative form,
    ``dm_j/dt = -sum_k d_k(m_j v_k) - sum_k (d_j v_k) m_k``. Equals
    ``-(div(v) m + Dv^T m + Dm v)`` in the continuum.

    Both derivatives are central differences with zero extension (``bc="zero"``), an exactly
    antisymmetric operator: the divergence of ``m v`` is minus the transpose of the gradient of
    ``v`` (summation by parts), so ``<dm/dt, v> = 0`` and the discrete energy ``<m, K m>`` is
    conserved for momentum anywhere in the image, border included."""
    ndim = len(spacing)
    vs = channels(v, keepdim=True)
    # In-place accumulation is autograd-safe here: central_diff saves nothing for backward and
    # addcmul_ saves only its factors, never the accumulator.
    out = central_diff(m * vs[0], 0, spacing[0], ndim, MOMENTUM_BC)
    for k in range(1, ndim):
        out.add_(central_diff(m * vs[k], k, spacing[k], ndim, MOMENTUM_BC))
    # (Dv^T m)_j = sum_k (d_j v_k) m_k
    dv_t_m = [
        (central_diff(v, j, spacing[j], ndim, MOMENTUM_BC) * m).sum(dim=1) for j in range(ndim)
    ]
    return out.add_(torch.stack(dv_t_m, dim=1)).neg_()


def advect_map_rhs(phi: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """Eulerian transport of a pull-back map, ``d phi^{-1}/dt = -D(phi^{-1}) v``
    (central differences with linear extrapolation)."""
    ndim = len(spacing)
    vs = channels(v, keepdim=True)
    out = central_diff(phi, 0, spacing[0], ndim, "linear") * vs[0]
    for j in range(1, ndim):
        out.addcmul_(central_diff(phi, j, spacing[j], ndim, "linear"), vs[j])
    return out.neg_()


def advect_scalar_rhs(h: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """Advection of scalar fields ``h: (B, N, *S)``: ``dh/dt = -<grad h, v>`` (zero-Neumann)."""
    ndim = len(spacing)
    vs = channels(v, keepdim=True)
    out = central_diff(h, 0, spacing[0], ndim, "neumann") * vs[0]
    for k in range(1, ndim):
        out.addcmul_(central_diff(h, k, spacing[k], ndim, "neumann"), vs[k])
    return out.neg_()


def lagrangian_rhs(phi: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """Lagrangian flow of the forward map, ``d phi/dt = v(t, phi)`` (v sampled bilinearly at
    ``phi``, border padding)."""
    return sample_field(v, phi, spacing, padding_mode="border")


def region_specific_velocity(
    m: Tensor, w: Tensor, kernels: FourierKernels
) -> tuple[Tensor, Tensor]:
    r"""Region-specific smoothing ``v = sum_i w_i K_{sigma_i} * (w_i m)``.

    Args:
        m: momentum ``(B, D, *S)``.
        w: weights ``(B, N, *S)``.
        kernels: N Fourier kernels on the grid of ``m``.

    Returns:
        ``v: (B, D, *S)`` and the stack ``nu: (B, N, D, *S)`` with ``nu_i = K_i * (w_i m)``.
    """
    nu = weighted_convolve(m, w, kernels)
    nus, ws = channels(nu), channels(w, keepdim=True)
    # accumulated in place (no (B, N, D, *S) product): addcmul_ saves only its factors
    v = nus[0] * ws[0]
    for i in range(1, len(nus)):
        v.addcmul_(nus[i], ws[i])
    return v, nu
