"""3D impulse at a corner through the multi-kernel smoother against a direct linear convolution.

A periodic FFT would carry most of a wide kernel's mass to the opposite faces; the zero padding
must make the FFT product equal the linear convolution with zero outside the grid. The widest
sigma here has a 4-sigma radius larger than the grid, which exercises the radius cap.
"""

from __future__ import annotations

import math

import pytest
import torch

from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import TRUNCATE, fft_convolve, fourier_gaussian_kernels

SHAPE = (20, 22, 25)
SIGMAS = (0.05, 0.15, 0.3)
WEIGHTS = (0.2, 0.3, 0.5)
CORNER = (1, 0, 2)


def _line(n: int, centre: int, sigma_vox: float) -> torch.Tensor:
    """Truncated sum-1 Gaussian centred at ``centre``, zero beyond its 4-sigma radius."""
    r = math.ceil(TRUNCATE * sigma_vox)
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (offsets / sigma_vox) ** 2)
    g = g / g.sum()
    k = torch.arange(n) - centre
    out = torch.zeros(n, dtype=torch.float64)
    inside = k.abs() <= r
    out[inside] = g[k[inside] + r]
    return out


def _direct(sigma: float) -> torch.Tensor:
    """The impulse response of the direct linear convolution: a separable product."""
    lines = [_line(n, c, sigma / h) for n, c, h in zip(SHAPE, CORNER, domain_spacing(SHAPE))]
    return torch.einsum("i,j,k->ijk", *lines)


def _impulse(channels: int) -> torch.Tensor:
    f = torch.zeros(1, channels, *SHAPE, dtype=torch.float64)
    f[(0, slice(None), *CORNER)] = 1.0
    return f


def _max_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("combined", [False, True], ids=["stack", "weighted-sum"])
def test_corner_impulse_matches_the_direct_linear_convolution(combined):
    sp = domain_spacing(SHAPE)
    if combined:
        kern = fourier_gaussian_kernels(SHAPE, SIGMAS, sp, weights=WEIGHTS, dtype=torch.float64)
        out = fft_convolve(_impulse(3), kern)[0]  # (C, *S), the same response per channel
        refs = [sum(w * _direct(s) for w, s in zip(WEIGHTS, SIGMAS))]
        outs = [out[c] for c in range(3)]
        refs = refs * 3
    else:
        kern = fourier_gaussian_kernels(SHAPE, SIGMAS, sp, dtype=torch.float64)
        f = _impulse(2).unsqueeze(1).expand(1, len(SIGMAS), 2, *SHAPE)  # (B, K, C, *S)
        out = fft_convolve(f, kern)[0]
        outs = [out[k, c] for k in range(len(SIGMAS)) for c in range(2)]
        refs = [_direct(s) for s in SIGMAS for _ in range(2)]
    for o, ref in zip(outs, refs):
        assert _max_error(o, ref) < 1e-3
        # nothing arrives at the far corner beyond what the kernel itself puts there
        far = (slice(-3, None),) * 3
        assert (o[far] - ref[far]).abs().max() < 1e-6 * ref.max()


def test_a_periodic_fft_fails_the_same_comparison():
    """Negative control: the circular convolution (no padding) of the widest Gaussian."""
    sigma = SIGMAS[-1]
    sp = domain_spacing(SHAPE)
    lines = []
    for n, h in zip(SHAPE, sp):
        periodic = torch.zeros(n, dtype=torch.float64)
        g = _line(4 * n, 2 * n, sigma / h)  # the full truncated kernel, centred
        for i in range(4 * n):
            periodic[(i - 2 * n) % n] += g[i]
        lines.append(periodic)
    spec = torch.einsum("i,j,k->ijk", *[torch.fft.fft(x).real for x in lines])
    out = torch.fft.ifftn(torch.fft.fftn(_impulse(1)[0, 0]) * spec).real
    assert _max_error(out, _direct(sigma)) > 1e-2
