r"""Gaussian smoothing without wrap-around, and the RDMM pre-weight smoothing.

Gaussians are sampled on the voxel grid (sigma given as a fraction of the domain, i.e. in domain
units, so ``sigma / h_d`` voxels along axis ``d``), truncated at ``TRUNCATE`` sigma and normalised
to discrete sum 1; the convolution is *linear* (zero outside the grid): nothing wraps from one
edge to the other. Two ways to apply it, chosen by ``tol`` (default :func:`default_kernel_tol`,
by dtype):

* ``tol = 0`` (float64): exact, by FFT. Inputs are zero-padded to a fast FFT length of at least
  ``n + r`` per axis (``r`` the kernel radius, capped at ``n - 1``).
* ``tol > 0`` (float32, ``KERNEL_TOL``): the separable operator of
  :mod:`~rdmm_lightning.ops.separable_smoothing`, each axis' convolution matrix with its
  eigenvalues below ``tol * max`` removed: symmetric positive semi-definite, about ``tol``
  (relative L2) from the exact convolution, and several times faster (a few matrix products on
  a shrinking field instead of FFTs on a padded volume).

Every operator here is symmetric, so each convolution is its own adjoint. Kernels are cached
per (shape, sigmas, weights, spacing, tol, device, dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .gaussian import gaussian_taps
from .separable_smoothing import (
    SeparableOperator,
    apply_separable,
    apply_separable_weighted,
    normalized_separable_operator,
    separable_operator,
)

__all__ = [
    "TRUNCATE",
    "KERNEL_TOL",
    "default_kernel_tol",
    "FourierKernels",
    "fourier_gaussian_kernels",
    "fft_convolve",
    "weighted_convolve",
    "gaussian_smooth",
    "multi_gaussian_smooth",
    "PreWeightSmoothing",
    "pre_weight_smoothing",
    "smooth_pre_weights",
    "smooth_pre_weights_adjoint",
    "local_sigma",
    "next_fast_len",
]

TRUNCATE = 4.0

KERNEL_TOL = 1e-4
"""Eigenvalue cut-off (relative to the largest, per axis) of the fast separable operator used
below float64; about 1e-4 relative L2 from the exact convolution (see
:mod:`~rdmm_lightning.ops.separable_smoothing`)."""


def default_kernel_tol(dtype: torch.dtype) -> float:
    """``0`` (exact FFT convolution) for float64, where references and gradient checks run;
    ``KERNEL_TOL`` (fast separable operator) for lower precisions."""
    return 0.0 if dtype == torch.float64 else KERNEL_TOL


def next_fast_len(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


class FourierKernels:
    """K Gaussian kernels for a grid of spatial ``shape``; apply with :func:`fft_convolve`.

    ``hat: (K, *F)`` are their real Fourier transforms zero-padded to ``padded`` (the exact FFT
    convolution). When ``separable`` is set, :func:`fft_convolve` applies that fast operator
    instead, and ``hat`` (kept for FFT comparisons) is built on first access.
    """

    def __init__(
        self,
        hat: Tensor | Callable[[], Tensor],
        shape: tuple[int, ...],
        padded: tuple[int, ...],
        count: int,
        separable: SeparableOperator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        self._hat = hat
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.shape = shape
        self.padded = padded
        self.count = count
        self.separable = separable

    @property
    def hat(self) -> Tensor:
        if callable(self._hat):
            self._hat = self._hat()
        return self._hat

    def __repr__(self) -> str:
        how = f"ranks={self.separable.ranks}" if self.separable else f"padded={self.padded}"
        return f"FourierKernels(K={self.count}, shape={self.shape}, {how})"


def _radius(sigma_vox: float, n: int) -> int:
    return min(n - 1, max(1, math.ceil(TRUNCATE * sigma_vox)))


def _gaussian_1d_hat(n: int, length: int, sigma_vox: float, full: bool) -> Tensor:
    """1D Fourier transform (real, float64) of the circularly embedded truncated Gaussian."""
    g = gaussian_taps(sigma_vox, TRUNCATE)
    r_norm = g.numel() // 2
    r = _radius(sigma_vox, n)
    kern = torch.zeros(length, dtype=torch.float64)
    kern[: r + 1] = g[r_norm : r_norm + r + 1]
    kern[length - r :] = g[r_norm - r : r_norm]
    spec = torch.fft.fft(kern) if full else torch.fft.rfft(kern)
    return spec.real


@lru_cache(maxsize=64)
def _kernels_cached(
    shape: tuple[int, ...],
    sigmas: tuple[float, ...],
    weights: tuple[float, ...] | None,
    spacing: tuple[float, ...],
    dtype: torch.dtype,
    device: torch.device,
    tol: float = 0.0,
) -> FourierKernels:
    max_sigma = max(sigmas)
    padded = tuple(next_fast_len(n + _radius(max_sigma / h, n)) for n, h in zip(shape, spacing))
    count = 1 if weights is not None else len(sigmas)
    if tol > 0:

        def exact_hat() -> Tensor:
            return _kernels_cached(shape, sigmas, weights, spacing, dtype, device, 0.0).hat

        op = separable_operator(shape, sigmas, weights, spacing, TRUNCATE, tol, dtype, device)
        return FourierKernels(exact_hat, shape, padded, count, op, dtype=dtype, device=device)
    ndim = len(shape)
    hats = []
    for sigma in sigmas:
        hat = None
        for d, (n, h, length) in enumerate(zip(shape, spacing, padded)):
            spec = _gaussian_1d_hat(n, length, sigma / h, full=d < ndim - 1)
            view = [1] * ndim
            view[d] = spec.numel()
            spec = spec.view(view)
            hat = spec if hat is None else hat * spec
        hats.append(hat)
    stack = torch.stack(hats, dim=0)
    if weights is not None:
        w = torch.tensor(weights, dtype=torch.float64).view(-1, *([1] * ndim))
        stack = (stack * w).sum(dim=0, keepdim=True)
    stack = stack.to(dtype=dtype, device=device).contiguous()
    return FourierKernels(stack, shape, padded, count, dtype=dtype, device=device)


def fourier_gaussian_kernels(
    shape: Sequence[int],
    sigmas: Sequence[float],
    spacing: Sequence[float],
    *,
    weights: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    tol: float | None = None,
) -> FourierKernels:
    """Kernels of Gaussians with std ``sigmas`` (domain units) on a grid of ``shape`` and
    ``spacing``. With ``weights``, the single kernel ``sum_i weights_i G_{sigma_i}`` (applied
    as that sum of the same per-kernel operators). ``tol``: 0 for the exact FFT convolution
    (all kernels share one padded shape, set by the largest sigma), > 0 for the fast separable
    operator; default :func:`default_kernel_tol` of ``dtype``. Cached."""
    shape = tuple(int(n) for n in shape)
    sigmas = tuple(float(s) for s in sigmas)
    spacing = tuple(float(h) for h in spacing)
    if len(spacing) != len(shape):
        raise ValueError(f"spacing must have {len(shape)} entries; got {spacing}")
    if not sigmas or min(sigmas) < 0:
        raise ValueError(f"sigmas must be a non-empty list of non-negative numbers; got {sigmas}")
    if weights is not None:
        weights = tuple(float(w) for w in weights)
        if len(weights) != len(sigmas):
            raise ValueError(
                f"weights must have one entry per sigma ({len(sigmas)}); got {len(weights)}"
            )
    tol = default_kernel_tol(dtype) if tol is None else float(tol)
    if not 0 <= tol < 1:
        raise ValueError(f"tol must be in [0, 1); got {tol}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return _kernels_cached(shape, sigmas, weights, spacing, dtype, device, tol)


def _convolve_spectral(f: Tensor, hat: Tensor, shape: tuple[int, ...], padded: tuple[int, ...]):
    ndim = len(shape)
    dims = tuple(range(-ndim, 0))
    out = torch.fft.irfftn(torch.fft.rfftn(f, s=padded, dim=dims) * hat, s=padded, dim=dims)
    for d, n in zip(dims, shape):
        out = out.narrow(d, 0, n)
    return out


class _SymmetricFFTConvolution(torch.autograd.Function):
    """Zero-padded FFT convolution with symmetric real kernels. The operator is self-adjoint,
    so the backward pass is the same convolution of the incoming gradient; nothing but the
    (cached) kernels is kept for backward — ``rfftn(s=...)`` would otherwise save its padded
    input."""

    @staticmethod
    def forward(ctx, f: Tensor, hat: Tensor, shape, padded):  # type: ignore[override]
        ctx.save_for_backward(hat)
        ctx.shape, ctx.padded = shape, padded
        return _convolve_spectral(f, hat, shape, padded)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (hat,) = ctx.saved_tensors
        grad_f = _SymmetricFFTConvolution.apply(grad, hat, ctx.shape, ctx.padded)
        return grad_f, None, None, None


def fft_convolve(f: Tensor, kernels: FourierKernels) -> Tensor:
    """Linear convolution of ``f: (..., *S)`` with K kernels: by FFT, or by the fast separable
    operator when ``kernels.separable`` is set.

    The leading dimensions of ``f`` broadcast against ``K``: pass ``(B, C, *S)`` with K = 1, or
    ``(B, K, C, *S)`` with K kernels (kernel ``k`` is applied to ``f[:, k]``).
    """
    ndim = len(kernels.shape)
    if tuple(f.shape[-ndim:]) != kernels.shape:
        raise ValueError(f"f must end in the spatial shape {kernels.shape}; got {tuple(f.shape)}")
    k = kernels.count
    if k > 1 and (f.dim() < ndim + 3 or f.shape[-ndim - 2] != k):
        raise ValueError(
            f"with {k} kernels f must have shape (B, {k}, C, *S); got {tuple(f.shape)}"
        )
    if kernels.separable is not None:
        return apply_separable(f, kernels.separable)
    hat = kernels.hat
    if k > 1:
        hat = hat.unsqueeze(1)
    else:
        hat = hat[0]
    if torch.is_grad_enabled() and f.requires_grad:
        return _SymmetricFFTConvolution.apply(f, hat, kernels.shape, kernels.padded)
    return _convolve_spectral(f, hat, kernels.shape, kernels.padded)


def weighted_convolve(m: Tensor, w: Tensor, kernels: FourierKernels) -> Tensor:
    """The stack ``nu_i = K_i * (w_i m)``, ``(B, N, D, *S)``, for ``m: (B, D, *S)``, weights
    ``w: (B, N, *S)`` and N kernels: :func:`fft_convolve` of the products, which the fast
    operator forms one kernel at a time."""
    ndim = len(kernels.shape)
    n = w.shape[1] if w.dim() == ndim + 2 else -1
    if n != kernels.count:
        raise ValueError(
            f"w must have shape (B, {kernels.count}, *S), one channel per kernel; "
            f"got {tuple(w.shape)}"
        )
    if m.dim() != ndim + 2 or m.shape[0] != w.shape[0] or m.shape[2:] != w.shape[2:]:
        raise ValueError(f"m must have shape ({w.shape[0]}, D, *S); got {tuple(m.shape)}")
    if kernels.separable is not None and n > 1:
        return apply_separable_weighted(m, w, kernels.separable)
    return fft_convolve(w.unsqueeze(2) * m.unsqueeze(1), kernels)


def gaussian_smooth(f: Tensor, sigma: float, spacing: Sequence[float]) -> Tensor:
    """Smooth ``f: (B, C, *S)`` with one Gaussian of std ``sigma`` (domain units)."""
    kern = fourier_gaussian_kernels(f.shape[2:], (sigma,), spacing, dtype=f.dtype, device=f.device)
    return fft_convolve(f, kern)


def multi_gaussian_smooth(
    f: Tensor, sigmas: Sequence[float], weights: Sequence[float], spacing: Sequence[float]
) -> Tensor:
    """Smooth ``f: (B, C, *S)`` with ``K = sum_i weights_i G_{sigma_i}`` (one FFT pass)."""
    kern = fourier_gaussian_kernels(
        f.shape[2:], sigmas, spacing, weights=weights, dtype=f.dtype, device=f.device
    )
    return fft_convolve(f, kern)


@dataclass(frozen=True, eq=False)
class PreWeightSmoothing:
    """The normalised pre-weight smoothing ``S h = (G_sigma * h) / (G_sigma * 1)`` on one grid
    (``sigma <= 0``: the identity), resolved once so that applying it looks nothing up (the
    shooting right-hand side calls it at every stage, also inside ``torch.compile``).

    ``operator``: the fast separable operator (division folded into its factors) and
    ``adjoint_operator`` its transpose, or None for the exact FFT convolution with ``kernels``
    divided by ``normaliser = G_sigma * 1``."""

    sigma: float
    operator: SeparableOperator | None = None
    adjoint_operator: SeparableOperator | None = None
    kernels: FourierKernels | None = None
    normaliser: Tensor | None = None

    def __call__(self, h: Tensor) -> Tensor:
        """``S h`` for ``h: (B, N, *S)``."""
        if self.sigma <= 0:
            return h
        if self.operator is not None:
            return apply_separable(h, self.operator)
        return fft_convolve(h, self.kernels) / self.normaliser

    def adjoint(self, g: Tensor) -> Tensor:
        """``S^T g = G_sigma * (g / (G_sigma * 1))`` for ``g: (B, N, *S)``."""
        if self.sigma <= 0:
            return g
        if self.operator is not None:
            return apply_separable(g, self.adjoint_operator)
        return fft_convolve(g / self.normaliser, self.kernels)


def pre_weight_smoothing(
    shape: Sequence[int],
    sigma: float,
    spacing: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> PreWeightSmoothing:
    """Cached :class:`PreWeightSmoothing` of std ``sigma`` (domain units) on a grid of ``shape``
    and ``spacing``: the fast operator below float64 (:func:`default_kernel_tol`), the exact
    FFT in float64."""
    device = torch.device("cpu") if device is None else torch.device(device)
    return _pre_weight_smoothing_cached(
        tuple(int(n) for n in shape), float(sigma), tuple(float(h) for h in spacing), dtype, device
    )


@lru_cache(maxsize=32)
def _pre_weight_smoothing_cached(
    shape: tuple[int, ...], sigma: float, spacing: tuple[float, ...], dtype, device
) -> PreWeightSmoothing:
    if sigma <= 0:
        return PreWeightSmoothing(sigma)
    tol = default_kernel_tol(dtype)
    if tol > 0:
        op = normalized_separable_operator(shape, sigma, spacing, TRUNCATE, tol, dtype, device)
        return PreWeightSmoothing(sigma, operator=op, adjoint_operator=op.adjoint)
    kernels = fourier_gaussian_kernels(shape, (sigma,), spacing, dtype=dtype, device=device)
    ones = torch.ones((1, 1, *shape), dtype=dtype, device=device)
    return PreWeightSmoothing(sigma, kernels=kernels, normaliser=fft_convolve(ones, kernels))


def smooth_pre_weights(h: Tensor, sigma: float, spacing: Sequence[float]) -> Tensor:
    """Weights ``w = S h = (G_sigma * h) / (G_sigma * 1)`` from pre-weights ``h: (B, N, *S)``
    (normalised convolution: constant pre-weights stay exactly constant). ``G_sigma`` as in
    :func:`gaussian_smooth`; with the fast operator, the division is folded into its factors
    (see :class:`PreWeightSmoothing`)."""
    return pre_weight_smoothing(h.shape[2:], sigma, spacing, h.dtype, h.device)(h)


def smooth_pre_weights_adjoint(g: Tensor, sigma: float, spacing: Sequence[float]) -> Tensor:
    """Adjoint ``S^T g = G_sigma * (g / (G_sigma * 1))`` of :func:`smooth_pre_weights`."""
    return pre_weight_smoothing(g.shape[2:], sigma, spacing, g.dtype, g.device).adjoint(g)


def local_sigma(w: Tensor, sigmas: Sequence[float]) -> Tensor:
    """Local regularizer std ``sigma(x) = sqrt(sum_i w_i^2 sigma_i^2)`` from ``w: (B, N, *S)``;
    returns ``(B, 1, *S)`` in domain units."""
    s2 = torch.tensor([float(s) ** 2 for s in sigmas], dtype=w.dtype, device=w.device)
    s2 = s2.view(1, -1, *([1] * (w.dim() - 2)))
    return (w.pow(2) * s2).sum(dim=1, keepdim=True).sqrt()
