r"""Central finite differences on the last ``D`` (spatial) dimensions of a tensor.

Boundary conditions (``bc``):

* ``"neumann"``: zero-Neumann; the derivative is 0 on the first and last voxel of the axis.
  Used for the RDMM pre-weights and scalar advection.
* ``"linear"``: linear extrapolation; the boundary derivative is the one-sided difference,
  exact for affine fields such as the identity map. Used for maps.
* ``"zero"``: zero extension; values outside the grid are 0, so the central formula holds on
  every voxel (``f[-1] = f[n] = 0``). The operator is exactly antisymmetric (its transpose is
  minus itself): a summation-by-parts pair with itself. Used for the momentum terms of EPDiff,
  consistent with the momentum being zero outside the image (the padded FFT smoothing assumes
  the same), so the discrete energy ``<m, K m>`` is conserved for momentum anywhere.

In the interior all are ``(f[i+1] - f[i-1]) / (2 h)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["central_diff", "gradient", "divergence", "jacobian_matrix"]

_BCS = ("neumann", "linear", "zero")


def _diff_forward(f: Tensor, dim: int, h: float, bc: str) -> Tensor:
    n = f.shape[dim]
    out = torch.empty_like(f)
    inner = out.narrow(dim, 1, n - 2)
    torch.sub(f.narrow(dim, 2, n - 2), f.narrow(dim, 0, n - 2), out=inner)
    inner.mul_(0.5 / h)
    first, last = out.narrow(dim, 0, 1), out.narrow(dim, n - 1, 1)
    if bc == "neumann":
        first.zero_()
        last.zero_()
    elif bc == "zero":
        torch.mul(f.narrow(dim, 1, 1), 0.5 / h, out=first)
        torch.mul(f.narrow(dim, n - 2, 1), -0.5 / h, out=last)
    else:
        torch.sub(f.narrow(dim, 1, 1), f.narrow(dim, 0, 1), out=first)
        torch.sub(f.narrow(dim, n - 1, 1), f.narrow(dim, n - 2, 1), out=last)
        first.mul_(1.0 / h)
        last.mul_(1.0 / h)
    return out


def _diff_traceable(f: Tensor, dim: int, h: float, bc: str) -> Tensor:
    """:func:`_diff_forward` from differentiable out-of-place operations only, for
    ``torch.compile`` (which fuses them and derives their backward); same values."""
    n = f.shape[dim]
    inner = (f.narrow(dim, 2, n - 2) - f.narrow(dim, 0, n - 2)) * (0.5 / h)
    if bc == "neumann":
        first = last = torch.zeros_like(f.narrow(dim, 0, 1))
    elif bc == "zero":
        first = f.narrow(dim, 1, 1) * (0.5 / h)
        last = f.narrow(dim, n - 2, 1) * (-0.5 / h)
    else:
        first = (f.narrow(dim, 1, 1) - f.narrow(dim, 0, 1)) * (1.0 / h)
        last = (f.narrow(dim, n - 1, 1) - f.narrow(dim, n - 2, 1)) * (1.0 / h)
    return torch.cat([first, inner, last], dim)


def _diff_adjoint(g: Tensor, dim: int, h: float, bc: str) -> Tensor:
    """Transpose of :func:`_diff_forward` applied to ``g``."""
    if bc == "zero":
        return _diff_forward(g, dim, h, bc).neg_()
    n = g.shape[dim]
    c = 0.5 / h
    out = torch.zeros_like(g)
    gi = g.narrow(dim, 1, n - 2)
    out.narrow(dim, 2, n - 2).add_(gi, alpha=c)
    out.narrow(dim, 0, n - 2).sub_(gi, alpha=c)
    if bc == "linear":
        g0, g1 = g.narrow(dim, 0, 1), g.narrow(dim, n - 1, 1)
        out.narrow(dim, 1, 1).add_(g0, alpha=1.0 / h)
        out.narrow(dim, 0, 1).sub_(g0, alpha=1.0 / h)
        out.narrow(dim, n - 1, 1).add_(g1, alpha=1.0 / h)
        out.narrow(dim, n - 2, 1).sub_(g1, alpha=1.0 / h)
    return out


class _CentralDiff(torch.autograd.Function):
    """Central difference as one linear operator: the backward pass applies its transpose,
    so nothing is saved for backward and no intermediate is allocated."""

    @staticmethod
    def forward(ctx, f: Tensor, dim: int, h: float, bc: str) -> Tensor:  # type: ignore[override]
        ctx.dim, ctx.h, ctx.bc = dim, h, bc
        return _diff_forward(f, dim, h, bc)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _CentralDiffAdjoint.apply(grad, ctx.dim, ctx.h, ctx.bc), None, None, None


class _CentralDiffAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: Tensor, dim: int, h: float, bc: str) -> Tensor:  # type: ignore[override]
        ctx.dim, ctx.h, ctx.bc = dim, h, bc
        return _diff_adjoint(g, dim, h, bc)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _CentralDiff.apply(grad, ctx.dim, ctx.h, ctx.bc), None, None, None


def central_diff(f: Tensor, axis: int, h: float, ndim: int, bc: str = "neumann") -> Tensor:
    """Central difference of ``f`` along spatial ``axis`` (0-based among the last ``ndim``
    dimensions) with grid spacing ``h``; same shape as ``f``."""
    if bc not in _BCS:
        raise ValueError(f"bc must be one of {_BCS}; got {bc!r}")
    dim = f.dim() - ndim + axis
    n = f.shape[dim]
    if n < 3:
        raise ValueError(f"central differences need at least 3 voxels along axis {axis}; got {n}")
    if torch.compiler.is_compiling():
        return _diff_traceable(f, dim, float(h), bc)
    if torch.is_grad_enabled() and f.requires_grad:
        return _CentralDiff.apply(f, dim, float(h), bc)
    return _diff_forward(f, dim, float(h), bc)


def gradient(f: Tensor, spacing: Sequence[float], bc: str = "neumann") -> Tensor:
    """Gradient of ``f: (B, C, *S)``.

    Returns ``(B, C, D, *S)`` with ``[:, c, k] = d f_c / d x_k``.
    """
    ndim = len(spacing)
    if f.dim() != ndim + 2:
        raise ValueError(
            f"f must have shape (B, C, *S) with {ndim} spatial dims; got {tuple(f.shape)}"
        )
    return torch.stack([central_diff(f, k, spacing[k], ndim, bc) for k in range(ndim)], dim=2)


def divergence(v: Tensor, spacing: Sequence[float], bc: str = "neumann") -> Tensor:
    """Divergence of a vector field ``v: (B, D, *S)``; returns ``(B, 1, *S)``."""
    ndim = len(spacing)
    if v.dim() != ndim + 2 or v.shape[1] != ndim:
        raise ValueError(f"v must have shape (B, {ndim}, *S); got {tuple(v.shape)}")
    out = central_diff(v[:, 0:1], 0, spacing[0], ndim, bc)
    for k in range(1, ndim):
        out = out + central_diff(v[:, k : k + 1], k, spacing[k], ndim, bc)
    return out


def jacobian_matrix(phi: Tensor, spacing: Sequence[float], bc: str = "linear") -> Tensor:
    """Jacobian of a map ``phi: (B, D, *S)``: ``(B, D, D, *S)`` with ``[:, i, j] = d phi_i / d x_j``
    (domain units, linear extrapolation at the border by default)."""
    ndim = len(spacing)
    if phi.dim() != ndim + 2 or phi.shape[1] != ndim:
        raise ValueError(f"phi must have shape (B, {ndim}, *S); got {tuple(phi.shape)}")
    return gradient(phi, spacing, bc)
