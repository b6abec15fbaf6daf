r"""Gaussian smoothing by FFT without wrap-around, and the RDMM pre-weight smoothing.

Gaussians are sampled on the voxel grid (sigma given as a fraction of the domain, i.e. in domain
units, so ``sigma / h_d`` voxels along axis ``d``), truncated at ``TRUNCATE`` sigma and normalised
to discrete sum 1. Inputs are zero-padded to a fast FFT length of at least ``n + r`` per axis
(``r`` the kernel radius, capped at ``n - 1``), which makes the circular FFT convolution equal the
direct *linear* convolution with the truncated kernel: nothing wraps from one edge to the other.

Fourier kernels are cached per (shape, sigmas, weights, spacing, device, dtype).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

__all__ = [
    "TRUNCATE",
    "FourierKernels",
    "fourier_gaussian_kernels",
    "fft_convolve",
    "gaussian_smooth",
    "multi_gaussian_smooth",
    "smooth_pre_weights",
    "smooth_pre_weights_adjoint",
    "normalize_pre_weights",
    "local_sigma",
    "next_fast_len",
]

TRUNCATE = 4.0


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
    """Real Fourier transforms ``hat: (K, *F)`` of K Gaussian kernels for a grid of spatial
    ``shape``, zero-padded to ``padded``. Apply with :func:`fft_convolve`."""

    def __init__(self, hat: Tensor, shape: tuple[int, ...], padded: tuple[int, ...]):
        self.hat = hat
        self.shape = shape
        self.padded = padded

    def __repr__(self) -> str:
        return f"FourierKernels(K={self.hat.shape[0]}, shape={self.shape}, padded={self.padded})"


def _radius(sigma_vox: float, n: int) -> int:
    return min(n - 1, max(1, math.ceil(TRUNCATE * sigma_vox)))


def _gaussian_1d_hat(n: int, length: int, sigma_vox: float, full: bool) -> Tensor:
    """1D Fourier transform (real, float64) of the circularly embedded truncated Gaussian."""
    r_norm = max(1, math.ceil(TRUNCATE * sigma_vox))
    x = torch.arange(-r_norm, r_norm + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma_vox) ** 2) if sigma_vox > 0 else (x == 0).double()
    g = g / g.sum()
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
) -> FourierKernels:
    ndim = len(shape)
    max_sigma = max(sigmas)
    padded = tuple(next_fast_len(n + _radius(max_sigma / h, n)) for n, h in zip(shape, spacing))
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
    return FourierKernels(stack.to(dtype=dtype, device=device).contiguous(), shape, padded)


def fourier_gaussian_kernels(
    shape: Sequence[int],
    sigmas: Sequence[float],
    spacing: Sequence[float],
    *,
    weights: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> FourierKernels:
    """Fourier kernels of Gaussians with std ``sigmas`` (domain units) on a grid of ``shape``
    and ``spacing``. With ``weights``, the single kernel ``sum_i weights_i G_{sigma_i}``.
    All kernels share one padded shape (set by the largest sigma). Cached."""
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
    device = torch.device("cpu") if device is None else torch.device(device)
    return _kernels_cached(shape, sigmas, weights, spacing, dtype, device)


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
    """Linear convolution of ``f: (..., *S)`` with kernels ``(K, *F)`` by FFT.

    The leading dimensions of ``f`` broadcast against ``K``: pass ``(B, C, *S)`` with K = 1, or
    ``(B, K, C, *S)`` with K kernels (kernel ``k`` is applied to ``f[:, k]``).
    """
    ndim = len(kernels.shape)
    if tuple(f.shape[-ndim:]) != kernels.shape:
        raise ValueError(f"f must end in the spatial shape {kernels.shape}; got {tuple(f.shape)}")
    hat = kernels.hat
    k = hat.shape[0]
    if k > 1:
        if f.dim() < ndim + 3 or f.shape[-ndim - 2] != k:
            raise ValueError(
                f"with {k} kernels f must have shape (B, {k}, C, *S); got {tuple(f.shape)}"
            )
        hat = hat.unsqueeze(1)
    else:
        hat = hat[0]
    if torch.is_grad_enabled() and f.requires_grad:
        return _SymmetricFFTConvolution.apply(f, hat, kernels.shape, kernels.padded)
    return _convolve_spectral(f, hat, kernels.shape, kernels.padded)


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


def _normaliser(
    shape: Sequence[int], sigma: float, spacing: Sequence[float], like: Tensor
) -> Tensor:
    return _normaliser_cached(tuple(shape), float(sigma), tuple(spacing), like.dtype, like.device)


@lru_cache(maxsize=32)
def _normaliser_cached(
    shape: tuple[int, ...], sigma: float, spacing: tuple[float, ...], dtype, device
) -> Tensor:
    ones = torch.ones((1, 1, *shape), dtype=dtype, device=device)
    return gaussian_smooth(ones, sigma, spacing)


def smooth_pre_weights(h: Tensor, sigma: float, spacing: Sequence[float]) -> Tensor:
    """Weights ``w = S h = (G_sigma * h) / (G_sigma * 1)`` from pre-weights ``h: (B, N, *S)``
    (normalised convolution: constant pre-weights stay exactly constant)."""
    if sigma <= 0:
        return h
    return gaussian_smooth(h, sigma, spacing) / _normaliser(h.shape[2:], sigma, spacing, h)


def smooth_pre_weights_adjoint(g: Tensor, sigma: float, spacing: Sequence[float]) -> Tensor:
    """Adjoint ``S^T g = G_sigma * (g / (G_sigma * 1))`` of :func:`smooth_pre_weights`."""
    if sigma <= 0:
        return g
    return gaussian_smooth(g / _normaliser(g.shape[2:], sigma, spacing, g), sigma, spacing)


def normalize_pre_weights(x: Tensor, floor: float = 1e-4, activation: str = "relu") -> Tensor:
    """Map raw values ``x: (B, N, *S)`` to pre-weights ``h >= 0`` with ``sum_i h_i^2 = 1`` per
    voxel: ReLU (or softplus) with a floor of ``floor`` against division by zero, then per-voxel
    L2 normalisation."""
    if activation == "relu":
        h = x.clamp_min(floor)
    elif activation == "softplus":
        h = torch.nn.functional.softplus(x) + floor
    else:
        raise ValueError(f"activation must be 'relu' or 'softplus'; got {activation!r}")
    return h / h.pow(2).sum(dim=1, keepdim=True).sqrt()


def local_sigma(w: Tensor, sigmas: Sequence[float]) -> Tensor:
    """Local regularizer std ``sigma(x) = sqrt(sum_i w_i^2 sigma_i^2)`` from ``w: (B, N, *S)``;
    returns ``(B, 1, *S)`` in domain units."""
    s2 = torch.tensor([float(s) ** 2 for s in sigmas], dtype=w.dtype, device=w.device)
    s2 = s2.view(1, -1, *([1] * (w.dim() - 2)))
    return (w.pow(2) * s2).sum(dim=1, keepdim=True).sqrt()
