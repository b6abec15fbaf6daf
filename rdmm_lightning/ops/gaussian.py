"""The 1D Gaussian kernel: the one formula behind every Gaussian filter of the package.

:func:`gaussian_window` evaluates ``exp(-x^2 / (2 sigma^2))`` (peak 1) at given offsets;
:func:`gaussian_taps` is the truncated, sum-1 kernel on ``-r..r`` used by the FFT and separable
smoothing (:mod:`.smoothing`), the anti-aliasing blur (:mod:`.resample`) and the synthetic data;
the Gaussian-weighted local sums of the similarities (:mod:`rdmm_lightning.losses.local_sums`)
use the window directly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gaussian_taps", "gaussian_window"]


def gaussian_window(offsets: Tensor, sigma: float) -> Tensor:
    """``exp(-x^2 / (2 sigma^2))`` at ``offsets: (K,)`` (same dtype/device; ``sigma > 0``, in
    the offsets' unit)."""
    return torch.exp(-0.5 * (offsets / sigma) ** 2)


def gaussian_taps(
    sigma: float,
    truncate: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(2 r + 1,)`` taps of the Gaussian of std ``sigma`` voxels on the offsets ``-r..r``,
    ``r = max(1, ceil(truncate * sigma))``, normalised to sum 1 (a unit impulse for
    ``sigma = 0``); computed in ``dtype`` (default float64)."""
    r = max(1, math.ceil(truncate * sigma))
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    g = gaussian_window(x, sigma) if sigma > 0 else (x == 0).to(dtype)
    return g / g.sum()
