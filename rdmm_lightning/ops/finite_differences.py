r"""Central finite differences on the last ``D`` (spatial) dimensions of a tensor.

Boundary conditions (``bc``):

* ``"neumann"``: zero-Neumann; the derivative is 0 on the first and last voxel of the axis.
  Used for momentum terms, the RDMM pre-weights and scalar advection.
* ``"linear"``: linear extrapolation; the boundary derivative is the one-sided difference,
  exact for affine fields such as the identity map. Used for maps.

In the interior both are ``(f[i+1] - f[i-1]) / (2 h)``; the central operator is antisymmetric
there, which is what makes the conservative EPDiff form conserve the discrete energy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["central_diff", "gradient", "divergence", "jacobian_matrix"]

_BCS = ("neumann", "linear")


def central_diff(f: Tensor, axis: int, h: float, ndim: int, bc: str = "neumann") -> Tensor:
    """Central difference of ``f`` along spatial ``axis`` (0-based among the last ``ndim``
    dimensions) with grid spacing ``h``; same shape as ``f``."""
    if bc not in _BCS:
        raise ValueError(f"bc must be one of {_BCS}; got {bc!r}")
    dim = f.dim() - ndim + axis
    n = f.shape[dim]
    if n < 3:
        raise ValueError(f"central differences need at least 3 voxels along axis {axis}; got {n}")
    inner = (f.narrow(dim, 2, n - 2) - f.narrow(dim, 0, n - 2)) * (0.5 / h)
    if bc == "neumann":
        zero = torch.zeros_like(f.narrow(dim, 0, 1))
        first, last = zero, zero
    else:
        first = (f.narrow(dim, 1, 1) - f.narrow(dim, 0, 1)) * (1.0 / h)
        last = (f.narrow(dim, n - 1, 1) - f.narrow(dim, n - 2, 1)) * (1.0 / h)
    return torch.cat([first, inner, last], dim=dim)


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
