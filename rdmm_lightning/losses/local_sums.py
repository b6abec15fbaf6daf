r"""Local (windowed) sums over ``(B, C, *S)`` tensors, 2D or 3D.

Window convention, per spatial axis: a window of ``k`` taps with dilation ``d`` at voxel ``i``
covers the voxels ``i + d * j`` for ``j = -lo, ..., hi`` with ``lo = (k - 1) // 2`` and
``hi = k - 1 - lo``: centred for odd ``k``, one extra tap on the positive side for even ``k``.
Its extent is ``d * (k - 1) + 1`` voxels.

Boundary handling: zero padding with "same" output size. Taps that fall outside the image
contribute zero, so near the border a window sum is the sum over the part of the window inside
the image. Local *means* are therefore obtained by dividing by the local sum of ones (or of a
mask), which averages over the truncated window (see :mod:`.similarity`).

The box sums use strided cumulative sums (cost independent of the window size); the Gaussian
sums use separable 1D convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.gaussian import gaussian_window

__all__ = ["box_sum", "gaussian_sum", "local_sum", "per_axis"]

IntOrSeq = int | Sequence[int]
FloatOrSeq = float | Sequence[float]


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


def _taps(k: int, d: int, n: int) -> tuple[int, int]:
    """``(lo, hi)`` tap counts of a ``k``-tap window, dropping taps that are outside the image
    for every voxel of an axis of length ``n`` (they would only add zeros)."""
    lo = (k - 1) // 2
    hi = k - 1 - lo
    reach = (n - 1) // d
    return min(lo, reach), min(hi, reach)


def _axis_box_sum(x: Tensor, axis: int, k: int, d: int) -> Tensor:
    n = x.shape[axis]
    lo, hi = _taps(k, d, n)
    if lo == 0 and hi == 0:
        return x
    x = x.movedim(axis, -1)
    # One extra block of d zeros on the left so that the lower cumulative sum index is >= 0.
    left = d * (lo + 1)
    length = n + left + d * hi
    right = d * hi + (-length) % d
    xp = F.pad(x, (left, right))
    # Cumulative sum along each residue class modulo d: c[m] = xp[m] + xp[m - d] + ...
    c = xp.unflatten(-1, (-1, d)).cumsum(dim=-2).flatten(-2)
    out = c[..., left + d * hi : left + d * hi + n] - c[..., :n]
    return out.movedim(-1, axis)


def box_sum(x: Tensor, window: IntOrSeq, dilation: IntOrSeq = 1) -> Tensor:
    """Sum of ``x: (B, C, *S)`` over a box window (``window`` taps per axis, int or tuple) with
    ``dilation``; zero padding, returns ``(B, C, *S)``."""
    windows, dilations = _check_input(x, window, dilation)
    for axis, (k, d) in enumerate(zip(windows, dilations)):
        x = _axis_box_sum(x, axis + 2, k, d)
    return x


def _gaussian_taps(k: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    lo = (k - 1) // 2
    j = torch.arange(-lo, k - lo, dtype=dtype, device=device)
    if sigma <= 0:
        return torch.ones_like(j)
    return gaussian_window(j, sigma)


def _axis_conv(x: Tensor, axis: int, taps: Tensor, k: int, d: int) -> Tensor:
    n = x.shape[axis]
    lo_full = (k - 1) // 2
    lo, hi = _taps(k, d, n)
    taps = taps[lo_full - lo : lo_full + hi + 1]
    if taps.numel() == 1:
        return x * taps[0]
    x = x.movedim(axis, -1)
    batch_shape = x.shape[:-1]
    flat = F.pad(x.reshape(-1, 1, n), (d * lo, d * hi))
    out = F.conv1d(flat, taps.view(1, 1, -1), dilation=d)
    return out.reshape(*batch_shape, n).movedim(-1, axis)


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
    windows, dilations = _check_input(x, window, dilation)
    ndim = len(windows)
    sigmas = (
        tuple((k - 1) / 4 for k in windows)
        if sigma is None
        else tuple(float(s) for s in per_axis(sigma, ndim, "sigma"))
    )
    if any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise ValueError(f"sigma must be finite and >= 0; got {sigmas}")
    for axis, (k, d, s) in enumerate(zip(windows, dilations, sigmas)):
        taps = _gaussian_taps(k, s, x.dtype, x.device)
        x = _axis_conv(x, axis + 2, taps, k, d)
    return x


def local_sum(x: Tensor, window: IntOrSeq, kernel: str = "box", dilation: IntOrSeq = 1) -> Tensor:
    """Local sum of ``x: (B, C, *S)`` with a ``"box"`` or ``"gaussian"`` window."""
    if kernel == "box":
        return box_sum(x, window, dilation)
    if kernel == "gaussian":
        return gaussian_sum(x, window, dilation=dilation)
    raise ValueError(f"kernel must be 'box' or 'gaussian'; got {kernel!r}")
