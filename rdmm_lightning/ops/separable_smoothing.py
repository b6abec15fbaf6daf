r"""Fast Gaussian smoothing by per-axis matrices: the truncated-spectrum separable operator.

Along one axis of ``n`` voxels, the zero-padded (linear) convolution with the truncated,
sum-1 Gaussian is a symmetric Toeplitz matrix ``T: (n, n)``. Its eigenvalues decay like the
Gaussian's spectrum, ``exp(-s^2 w^2 / 2)`` for ``s`` voxels, down to a floor of about 1e-5
left by the truncation at ``TRUNCATE`` sigma (where some are slightly negative). Keeping only
the eigenvalues above ``tol * max`` gives

    ``T_tol = U diag(lam) U^T``,  ``U: (n, k)`` orthonormal, ``lam > 0``,

symmetric positive semi-definite, of rank ``k`` about ``1.5 n / s`` for ``tol = 1e-4``, and
within about ``tol`` (relative L2) of ``T``. The nD operator is the Kronecker product of the
per-axis matrices, so it stays symmetric PSD; applied to a field it costs one matrix product per
axis: projections ``U^T`` along the low-rank axes (each shrinks the field), a dense
``T_tol: (n, n)`` along the axes where the rank is too high to pay, then the expansions
``U diag(lam)``. This replaces the zero-padded FFT (whose padded volume is 4-8x the grid in 3D)
by a few BLAS products on a shrinking field.

The normalised pre-weight smoothing ``(K f) / (K 1)`` is separable as well (``K 1`` is an outer
product of per-axis row sums), so its division is folded into the factors.

Operators are cached per (shape, sigmas, weights, spacing, tol, dtype, device). The autograd
Function keeps nothing but those cached matrices: its backward pass applies the transposed
operator (the operator itself for the Gaussians, which are symmetric) to the incoming gradient.
Under ``torch.compile`` the same products run out of place (``_apply_traceable``), so that
dynamo traces them and AOTAutograd derives their backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch
from torch import Tensor

from .gaussian import gaussian_taps

__all__ = [
    "AxisFactor",
    "SeparableOperator",
    "band_matrix",
    "gaussian_toeplitz",
    "truncated_axis_factor",
    "separable_operator",
    "normalized_separable_operator",
    "apply_separable",
    "apply_separable_weighted",
]

LOW_RANK_MAX_FRACTION = 0.5
"""An axis is applied by its factors ``U^T``, ``U diag(lam)`` when its rank is at most this
fraction of its length (two products of ``k`` per voxel against one of ``n``); otherwise by the
dense ``T_tol``. Either way the operator is the same."""


@dataclass(frozen=True, eq=False)
class AxisFactor:
    """The matrix ``M: (n, n)`` of one axis: ``M = up @ down`` with ``down: (k, n)`` and
    ``up: (n, k)`` (low rank ``k``), or ``down=None`` and ``M = up`` (dense)."""

    down: Tensor | None
    up: Tensor
    rank: int

    def transposed(self) -> AxisFactor:
        if self.down is None:
            return AxisFactor(None, self.up.T.contiguous(), self.rank)
        return AxisFactor(self.up.T.contiguous(), self.down.T.contiguous(), self.rank)


@dataclass(frozen=True, eq=False)
class SeparableOperator:
    """``terms[i][d]``: the factor of kernel ``i`` along spatial axis ``d`` (the operator of
    kernel ``i`` is the Kronecker product of its factors). With ``combined``, one operator
    ``sum_i terms_i`` (weights folded into the factors); otherwise K operators, kernel ``i``
    applied to channel block ``i``. ``symmetric``: every factor is a symmetric matrix."""

    shape: tuple[int, ...]
    terms: tuple[tuple[AxisFactor, ...], ...]
    combined: bool
    symmetric: bool

    @property
    def ranks(self) -> tuple[tuple[int, ...], ...]:
        """Kept eigenvalues per kernel and axis."""
        return tuple(tuple(f.rank for f in term) for term in self.terms)

    @cached_property
    def adjoint(self) -> SeparableOperator:
        """The transposed operator (``self`` when symmetric)."""
        if self.symmetric:
            return self
        terms = tuple(tuple(f.transposed() for f in term) for term in self.terms)
        return SeparableOperator(self.shape, terms, self.combined, False)


def band_matrix(n: int, taps: Tensor, lo: int, dilation: int = 1) -> Tensor:
    """``(n, n)`` float64 matrix of a 1D filter along an axis of ``n`` voxels, zero outside
    the axis: row ``i`` holds ``taps[t]`` at column ``i + dilation * (t - lo)`` (``taps: (k,)``,
    tap ``lo`` on the diagonal)."""
    offset = torch.arange(n).view(1, -1) - torch.arange(n).view(-1, 1)  # column - row
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for t, weight in enumerate(taps.tolist()):
        matrix += weight * (offset == dilation * (t - lo))
    return matrix


def gaussian_toeplitz(n: int, sigma_vox: float, truncate: float) -> Tensor:
    """``(n, n)`` float64 matrix of the 1D linear convolution (zero outside the grid) with
    :func:`~rdmm_lightning.ops.gaussian.gaussian_taps`."""
    g = gaussian_taps(sigma_vox, truncate)
    return band_matrix(n, g, g.numel() // 2)


@lru_cache(maxsize=16)
def _axis_eigen(n: int, sigma_vox: float, truncate: float) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending) and eigenvectors of :func:`gaussian_toeplitz`, float64 (a few
    cached: the axes of one grid share them; the operators built from them are cached)."""
    lam, vec = torch.linalg.eigh(gaussian_toeplitz(n, sigma_vox, truncate))
    return lam.flip(0), vec.flip(1)


def truncated_axis_factor(
    n: int, sigma_vox: float, truncate: float, tol: float, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``U: (n, k)`` and ``lam: (k,)`` (float64) of ``scale * T_tol``: the eigenpairs of the
    Toeplitz Gaussian with eigenvalue above ``tol`` times the largest."""
    lam, vec = _axis_eigen(n, float(sigma_vox), float(truncate))
    keep = int((lam > tol * lam[0]).sum())
    return vec[:, :keep], lam[:keep] * scale


def _axis_factor(
    u: Tensor, lam: Tensor, dtype: torch.dtype, device: torch.device, row_scale: Tensor | None
) -> AxisFactor:
    """Factor of ``diag(row_scale) U diag(lam) U^T`` (``row_scale`` None: 1), low rank or dense
    per ``LOW_RANK_MAX_FRACTION``."""
    n, k = u.shape
    up = u * lam
    if k <= LOW_RANK_MAX_FRACTION * n:
        down = u.T
    else:
        up, down = up @ u.T, None
        up = 0.5 * (up + up.T)  # exactly symmetric after rounding
    if row_scale is not None:
        up = row_scale.view(-1, 1) * up
    cast = dict(dtype=dtype, device=device)
    down = None if down is None else down.to(**cast).contiguous()
    return AxisFactor(down, up.to(**cast).contiguous(), k)


@lru_cache(maxsize=64)
def separable_operator(
    shape: tuple[int, ...],
    sigmas: tuple[float, ...],
    weights: tuple[float, ...] | None,
    spacing: tuple[float, ...],
    truncate: float,
    tol: float,
    dtype: torch.dtype,
    device: torch.device,
) -> SeparableOperator:
    """Cached :class:`SeparableOperator` of Gaussians with std ``sigmas`` (domain units) on a
    grid of ``shape`` and ``spacing``; with ``weights``, the single ``sum_i weights_i K_i``."""
    _check_tol(tol)
    terms = []
    for i, sigma in enumerate(sigmas):
        term = []
        for d, (n, h) in enumerate(zip(shape, spacing)):
            scale = weights[i] if (weights is not None and d == 0) else 1.0
            u, lam = truncated_axis_factor(n, sigma / h, truncate, tol, scale)
            term.append(_axis_factor(u, lam, dtype, device, None))
        terms.append(tuple(term))
    return SeparableOperator(shape, tuple(terms), weights is not None, True)


@lru_cache(maxsize=32)
def normalized_separable_operator(
    shape: tuple[int, ...],
    sigma: float,
    spacing: tuple[float, ...],
    truncate: float,
    tol: float,
    dtype: torch.dtype,
    device: torch.device,
) -> SeparableOperator:
    """Cached normalised smoothing ``f -> (K f) / (K 1)`` with ``K`` the separable Gaussian of
    std ``sigma``. ``K 1`` is the outer product of the per-axis row sums ``r_d = T_d 1``, so the
    division is folded into the factors: ``diag(1 / r_d) T_d`` per axis (not symmetric; its
    :attr:`~SeparableOperator.adjoint` is ``f -> K (f / (K 1))``)."""
    _check_tol(tol)
    term = []
    for n, h in zip(shape, spacing):
        u, lam = truncated_axis_factor(n, sigma / h, truncate, tol)
        rows = u @ (lam * u.sum(0))  # T_tol 1
        if float(rows.min()) <= 0:
            raise ValueError(f"sigma={sigma} is too wide for a normalised smoothing on {shape}")
        term.append(_axis_factor(u, lam, dtype, device, 1.0 / rows))
    return SeparableOperator(shape, (tuple(term),), False, False)


def _check_tol(tol: float) -> None:
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1); got {tol}")


def _along(x: Tensor, mat: Tensor, axis: int, out: Tensor | None = None) -> Tensor:
    """``mat: (p, q)`` applied along dimension ``axis`` of ``x`` (size q there); written into
    ``out`` when given."""
    shape = (*x.shape[:axis], mat.shape[0], *x.shape[axis + 1 :])
    if out is not None and not out.is_contiguous():
        return out.copy_(_along(x, mat, axis))
    if axis == x.dim() - 1:
        if out is None:
            return x @ mat.T
        return torch.matmul(x, mat.T, out=out)
    x3 = x.reshape(-1, x.shape[axis], math.prod(x.shape[axis + 1 :]))
    if out is None:
        return torch.matmul(mat, x3).view(shape)
    torch.matmul(mat, x3, out=out.view(x3.shape[0], mat.shape[0], x3.shape[2]))
    return out


def _apply_term(x: Tensor, term: tuple[AxisFactor, ...], out: Tensor | None = None) -> Tensor:
    """One Kronecker product of axis factors applied to ``x: (..., *S)`` (into ``out``)."""
    first = x.dim() - len(term)
    low = [d for d in range(len(term)) if term[d].down is not None]
    dense = [d for d in range(len(term)) if term[d].down is None]
    steps = [(term[d].down, d) for d in reversed(low)]  # projections, last axis first
    steps += [(term[d].up, d) for d in dense] + [(term[d].up, d) for d in low]
    for j, (mat, d) in enumerate(steps):
        x = _along(x, mat, first + d, out if j == len(steps) - 1 else None)
    return x


def _stacked_out(f: Tensor, k_dim: int, channels: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Output ``(..., K, *channels)`` with dimension ``k_dim`` of size K, stored K-major so that
    each kernel's block is contiguous; returns (the view with K at ``k_dim``, the K-major)."""
    k = f.shape[k_dim]
    store = f.new_empty((k, *f.shape[:k_dim], *channels))
    return store.movedim(0, k_dim), store


def _apply(f: Tensor, op: SeparableOperator) -> Tensor:
    """``op`` applied to ``f`` (see :func:`apply_separable`), without autograd."""
    if op.combined:
        out = _apply_term(f, op.terms[0])
        for term in op.terms[1:]:
            out = out.add_(_apply_term(f, term))
        return out
    if len(op.terms) == 1:
        return _apply_term(f, op.terms[0])
    k_dim = f.dim() - len(op.shape) - 2
    out, store = _stacked_out(f, k_dim, tuple(f.shape[k_dim + 1 :]))
    for i, term in enumerate(op.terms):
        _apply_term(f.select(k_dim, i), term, store[i])
    return out


def _apply_weighted(m: Tensor, w: Tensor, op: SeparableOperator) -> Tensor:
    """``(B, K, D, *S)`` stack of ``K_i (w_i m)``, one product at a time, without autograd."""
    out, store = _stacked_out(w, 1, tuple(m.shape[1:]))
    for i, term in enumerate(op.terms):
        _apply_term(w[:, i : i + 1] * m, term, store[i])
    return out


def _apply_traceable(f: Tensor, op: SeparableOperator) -> Tensor:
    """:func:`_apply` for ``torch.compile``: the K-kernel stack by ``torch.stack`` instead of
    writes into a preallocated output (``out=``), which AOTAutograd cannot trace; same values."""
    if op.combined or len(op.terms) == 1:
        return _apply(f, op)  # out-of-place products (its in-place sum is functionalised)
    k_dim = f.dim() - len(op.shape) - 2
    parts = [_apply_term(f.select(k_dim, i), term) for i, term in enumerate(op.terms)]
    return torch.stack(parts, dim=k_dim)


def _apply_weighted_traceable(m: Tensor, w: Tensor, op: SeparableOperator) -> Tensor:
    """:func:`_apply_weighted` from out-of-place operations only, for ``torch.compile``."""
    parts = [_apply_term(w[:, i : i + 1] * m, term) for i, term in enumerate(op.terms)]
    return torch.stack(parts, dim=1)


class _SeparableFunction(torch.autograd.Function):
    """Separable operator with the backward pass ``op.adjoint`` applied to the gradient
    (``op`` itself when symmetric): nothing but the cached factors (held by ``op``) is kept."""

    @staticmethod
    def forward(ctx, f: Tensor, op: SeparableOperator):  # type: ignore[override]
        ctx.op = op
        return _apply(f, op)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _SeparableFunction.apply(grad, ctx.op.adjoint), None


def apply_separable(f: Tensor, op: SeparableOperator) -> Tensor:
    """Apply ``op`` to ``f: (..., *S)``: ``(B, C, *S)`` for a single or combined operator,
    ``(B, K, C, *S)`` for K kernels (kernel ``k`` on ``f[:, k]``). Shapes are checked by the
    callers in :mod:`~rdmm_lightning.ops.smoothing`."""
    if torch.compiler.is_compiling():
        return _apply_traceable(f, op)
    if torch.is_grad_enabled() and f.requires_grad:
        return _SeparableFunction.apply(f, op)
    return _apply(f, op)


class _WeightedSeparableFunction(torch.autograd.Function):
    """``nu_i = K_i (w_i m)`` with the products formed one kernel at a time (no
    ``(B, K, D, *S)`` product). Keeps ``m`` and ``w`` (which the product would keep as well)
    and the cached factors; backward: ``g_i = K_i^T grad_i``, ``dm = sum_i w_i g_i``,
    ``dw_i = m . g_i``."""

    @staticmethod
    def forward(ctx, m: Tensor, w: Tensor, op: SeparableOperator):  # type: ignore[override]
        ctx.save_for_backward(m, w)
        ctx.op = op
        return _apply_weighted(m, w, op)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        m, w = ctx.saved_tensors
        g = apply_separable(grad, ctx.op.adjoint)  # (B, K, D, *S)
        grad_m = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_m = g[:, 0] * w[:, 0:1]
            for i in range(1, g.shape[1]):
                grad_m = grad_m.addcmul_(g[:, i], w[:, i : i + 1])
        if ctx.needs_input_grad[1]:
            grad_w = g[:, :, 0] * m[:, 0:1]
            for d in range(1, g.shape[2]):
                grad_w = grad_w.addcmul_(g[:, :, d], m[:, d : d + 1])
        return grad_m, grad_w, None


def apply_separable_weighted(m: Tensor, w: Tensor, op: SeparableOperator) -> Tensor:
    """``(B, K, D, *S)`` stack ``nu_i = K_i (w_i m)`` for ``m: (B, D, *S)``, ``w: (B, K, *S)``
    and K (not combined) kernels. Shapes are checked by the caller."""
    if torch.compiler.is_compiling():
        return _apply_weighted_traceable(m, w, op)
    if torch.is_grad_enabled() and (m.requires_grad or w.requires_grad):
        return _WeightedSeparableFunction.apply(m, w, op)
    return _apply_weighted(m, w, op)
