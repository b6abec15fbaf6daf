r"""Local (windowed) sums and means over ``(B, C, *S)`` tensors, 2D or 3D.

Window convention, per spatial axis: a window of ``k`` taps with dilation ``d`` at voxel ``i``
covers the voxels ``i + d * j`` for ``j = -lo, ..., hi`` with ``lo = (k - 1) // 2`` and
``hi = k - 1 - lo``: centred for odd ``k``, one extra tap on the positive side for even ``k``.
Its extent is ``d * (k - 1) + 1`` voxels.

Boundary handling: zero padding with "same" output size. Taps that fall outside the image
contribute zero, so near the border a window sum is the sum over the part of the window inside
the image. :func:`local_mean` divides by the window weight inside the image (the local sum of
ones), i.e. it averages over the truncated window (see :mod:`.similarity`).

Both windows (box and Gaussian) are separable: along one axis of ``n`` voxels the local sum is a
banded ``(n, n)`` matrix, and the nD sum is their Kronecker product, applied as one matrix
product per axis by :func:`~rdmm_lightning.ops.separable_smoothing.apply_separable` (BLAS, no
padded or transposed copies; 3x faster than strided cumulative sums for a 9-tap box on
64x80x80 on one thread, and exact sums rather than differences of running sums). Its backward is
the transposed operator applied to the gradient. The window means fold the division by the
window weight into the matrices' rows (the weight of a separable window is the outer product of
per-axis row sums). Operators are cached per (shape, windows, dilations, kernel, dtype, device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

from ..ops.gaussian import gaussian_window
from ..ops.separable_smoothing import AxisFactor, SeparableOperator, apply_separable, band_matrix
from ..options import LocalKernel, either, values

__all__ = ["box_sum", "gaussian_sum", "local_mean", "local_sum", "per_axis"]

IntOrSeq = int | Sequence[int]
FloatOrSeq = float | Sequence[float]

KERNELS = values(LocalKernel)
"""Window kinds of :func:`local_sum` and :func:`local_mean`."""


def per_axis(value: IntOrSeq | FloatOrSeq, ndim: int, name: str) -> tuple:
    """Broadcast a scalar to ``ndim`` entries, or check that a sequence has ``ndim`` entries."""
    try:
        value = tuple(value)
    except TypeError:
        return (value,) * ndim
    if len(value) != ndim:
        raise ValueError(f"{name} must be a number or have {ndim} entries; got {value}")
    return value


def _check_input(
    x: Tensor, window: IntOrSeq, dilation: IntOrSeq
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if x.dim() not in (4, 5):
        raise ValueError(
            f"x must have shape (B, C, *S) with 2 or 3 spatial dims; got {tuple(x.shape)}"
        )
    ndim = x.dim() - 2
    windows = tuple(int(k) for k in per_axis(window, ndim, "window"))
    dilations = tuple(int(d) for d in per_axis(dilation, ndim, "dilation"))
    if min(windows) < 1 or min(dilations) < 1:
        raise ValueError(f"window and dilation must be >= 1; got {windows} and {dilations}")
    return windows, dilations


def _tap_weights(k: int, kernel: str, sigma: float) -> Tensor:
    """Weights of the taps ``j = -lo, ..., hi`` of a ``k``-tap window (float64): ones for the
    box, ``exp(-j^2 / (2 sigma^2))`` for the Gaussian (ones if ``sigma == 0``)."""
    lo = (k - 1) // 2
    j = torch.arange(-lo, k - lo, dtype=torch.float64)
    if kernel == "box" or sigma <= 0:
        return torch.ones_like(j)
    return gaussian_window(j, sigma)


@lru_cache(maxsize=64)
def _local_operator(
    shape: tuple[int, ...],
    windows: tuple[int, ...],
    dilations: tuple[int, ...],
    kernel: str,
    sigmas: tuple[float, ...],
    mean: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> SeparableOperator:
    """Cached separable operator of the local sum (``mean``: the local mean, each axis matrix
    divided by its row sums) on a grid ``shape``."""
    factors, symmetric = [], True
    for n, k, d, sigma in zip(shape, windows, dilations, sigmas):
        matrix = band_matrix(n, _tap_weights(k, kernel, sigma), (k - 1) // 2, d)
        if mean:
            matrix = matrix / matrix.sum(dim=1, keepdim=True)
        symmetric = symmetric and bool(torch.equal(matrix, matrix.T))
        factors.append(AxisFactor(None, matrix.to(dtype=dtype, device=device).contiguous(), n))
    return SeparableOperator(shape, (tuple(factors),), False, symmetric)


def _sigmas(windows: tuple[int, ...], sigma: FloatOrSeq | None) -> tuple[float, ...]:
    """Gaussian stds in taps: ``(window - 1) / 4`` by default (the window spans +-2 sigma)."""
    if sigma is None:
        return tuple((k - 1) / 4 for k in windows)
    sigmas = tuple(float(s) for s in per_axis(sigma, len(windows), "sigma"))
    if any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise ValueError(f"sigma must be finite and >= 0; got {sigmas}")
    return sigmas


def _apply_window(
    x: Tensor,
    window: IntOrSeq,
    kernel: str,
    dilation: IntOrSeq,
    sigma: FloatOrSeq | None,
    mean: bool,
) -> Tensor:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be {either(LocalKernel)}; got {kernel!r}")
    windows, dilations = _check_input(x, window, dilation)
    sigmas = _sigmas(windows, sigma) if kernel == "gaussian" else (0.0,) * len(windows)
    shape = tuple(x.shape[2:])
    op = _local_operator(shape, windows, dilations, kernel, sigmas, mean, x.dtype, x.device)
    return apply_separable(x, op)


def box_sum(x: Tensor, window: IntOrSeq, dilation: IntOrSeq = 1) -> Tensor:
    """Sum of ``x: (B, C, *S)`` over a box window (``window`` taps per axis, int or tuple) with
    ``dilation``; zero padding, returns ``(B, C, *S)``."""
    return _apply_window(x, window, "box", dilation, None, mean=False)


def gaussian_sum(
    x: Tensor,
    window: IntOrSeq,
    sigma: FloatOrSeq | None = None,
    dilation: IntOrSeq = 1,
) -> Tensor:
    """Gaussian-weighted local sum of ``x: (B, C, *S)``; returns ``(B, C, *S)``.

    The window has ``window`` taps per axis (same convention and zero padding as
    :func:`box_sum`); tap ``j`` has weight ``exp(-j^2 / (2 sigma^2))`` (peak weight 1, ``sigma``
    in taps). ``sigma`` defaults to ``(window - 1) / 4`` so the window spans +-2 sigma.
    """
    return _apply_window(x, window, "gaussian", dilation, sigma, mean=False)


def local_sum(x: Tensor, window: IntOrSeq, kernel: str = "box", dilation: IntOrSeq = 1) -> Tensor:
    """Local sum of ``x: (B, C, *S)`` with a ``"box"`` or ``"gaussian"`` window."""
    return _apply_window(x, window, kernel, dilation, None, mean=False)


def local_mean(x: Tensor, window: IntOrSeq, kernel: str = "box", dilation: IntOrSeq = 1) -> Tensor:
    """Weighted mean of ``x: (B, C, *S)`` over the part of the window inside the image:
    :func:`local_sum` of ``x`` divided by :func:`local_sum` of ones, in one pass."""
    return _apply_window(x, window, kernel, dilation, None, mean=True)
