import math

import numpy as np
import pytest
import torch

from rdmm_lightning.ops import (
    fourier_gaussian_kernels,
    gaussian_smooth,
    local_sigma,
    multi_gaussian_smooth,
    normalize_pre_weights,
    smooth_pre_weights,
    smooth_pre_weights_adjoint,
)
from rdmm_lightning.ops.grid import domain_spacing


def _gauss1d(sigma_vox: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return g / g.sum()


@pytest.mark.parametrize("shape", [(41, 45), (21, 23, 25)])
def test_delta_gives_the_analytic_gaussian(shape):
    sp = domain_spacing(shape)
    sigma = 0.1
    delta = torch.zeros(1, 1, *shape, dtype=torch.float64)
    centre = tuple(n // 2 for n in shape)
    delta[(0, 0, *centre)] = 1.0
    out = gaussian_smooth(delta, sigma, sp)[0, 0].numpy()
    expected = np.ones(())
    for d, n in enumerate(shape):
        s_vox = sigma / sp[d]
        r = math.ceil(4 * s_vox)
        g = _gauss1d(s_vox, r)
        line = np.zeros(n)
        for i in range(n):
            k = i - centre[d]
            if abs(k) <= r:
                line[i] = g[k + r]
        expected = np.multiply.outer(expected, line)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    # second moment along the first axis matches sigma in voxels
    idx = np.arange(shape[0]) - centre[0]
    var = (out.sum(axis=tuple(range(1, len(shape)))) * idx**2).sum()
    assert math.sqrt(var) == pytest.approx(sigma / sp[0], rel=1e-3)


def test_impulse_near_an_edge_does_not_wrap_around():
    n = 64
    shape = (n, n)
    sp = domain_spacing(shape)
    sigma = 0.15  # ~9.5 voxels: a periodic FFT would leak heavily to the opposite edge
    img = torch.zeros(1, 1, n, n, dtype=torch.float64)
    img[0, 0, 1, 30] = 1.0
    out = gaussian_smooth(img, sigma, sp)[0, 0].numpy()
    s_vox = sigma / sp[0]
    r = math.ceil(4 * s_vox)
    g = _gauss1d(s_vox, r)
    # direct linear convolution with zero padding (no wrap-around), separable
    ref = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            di, dj = i - 1, j - 30
            if abs(di) <= r and abs(dj) <= r:
                ref[i, j] = g[di + r] * g[dj + r]
    assert np.abs(out - ref).max() < 1e-3 * ref.max()
    assert np.abs(out[-5:]).max() < 1e-6 * ref.max()


def test_kernels_are_cached_per_shape_sigma_dtype():
    a = fourier_gaussian_kernels((16, 16), (0.1, 0.2), (0.1, 0.1))
    b = fourier_gaussian_kernels((16, 16), [0.1, 0.2], [0.1, 0.1])
    c = fourier_gaussian_kernels((16, 16), (0.1, 0.2), (0.1, 0.1), dtype=torch.float64)
    assert a is b and a is not c
    assert a.padded[0] >= 16 + min(15, math.ceil(4 * 0.2 / 0.1))


def test_multi_gaussian_is_the_weighted_sum():
    shape = (20, 22)
    sp = domain_spacing(shape)
    f = torch.rand(2, 2, *shape, dtype=torch.float64)
    sig, w = (0.05, 0.1, 0.2), (0.2, 0.3, 0.5)
    expected = sum(wi * gaussian_smooth(f, s, sp) for s, wi in zip(sig, w))
    torch.testing.assert_close(multi_gaussian_smooth(f, sig, w, sp), expected)


@pytest.mark.parametrize("shape", [(17, 19), (9, 10, 11)])
def test_pre_weight_smoothing_and_its_adjoint(shape):
    sp = domain_spacing(shape)
    g = torch.Generator().manual_seed(3)
    f = torch.randn(2, 3, *shape, generator=g, dtype=torch.float64)
    k = torch.randn(2, 3, *shape, generator=g, dtype=torch.float64)
    lhs = (smooth_pre_weights(f, 0.08, sp) * k).sum()
    rhs = (f * smooth_pre_weights_adjoint(k, 0.08, sp)).sum()
    assert abs(float(lhs - rhs)) < 1e-12 * float(lhs.abs() + 1)
    # a wrong adjoint (plain smoothing) fails the same check near the border
    wrong = (f * gaussian_smooth(k, 0.08, sp)).sum()
    assert abs(float(lhs - wrong)) > 1e-6
    const = torch.full((1, 3, *shape), 0.3, dtype=torch.float64)
    torch.testing.assert_close(smooth_pre_weights(const, 0.08, sp), const)


def test_pre_weight_normalisation_and_local_sigma():
    x = torch.randn(2, 4, 6, 7)
    h = normalize_pre_weights(x)
    assert (h >= 0).all()
    torch.testing.assert_close(h.pow(2).sum(1), torch.ones(2, 6, 7))
    hs = normalize_pre_weights(x, activation="softplus")
    torch.testing.assert_close(hs.pow(2).sum(1), torch.ones(2, 6, 7))
    w = torch.zeros(1, 2, 3, 3)
    w[:, 1] = 1.0
    torch.testing.assert_close(local_sigma(w, (0.1, 0.3)), torch.full((1, 1, 3, 3), 0.3))
    with pytest.raises(ValueError, match="activation"):
        normalize_pre_weights(x, activation="softmax")


def test_fft_convolve_custom_backward_gradcheck():
    """Zero-padded convolution with a symmetric kernel is self-adjoint; the custom backward
    relies on that, so check it against finite differences, near the border too."""
    from rdmm_lightning.ops.smoothing import fft_convolve, fourier_gaussian_kernels

    kern = fourier_gaussian_kernels((7, 6), [0.1, 0.25], (1 / 6, 1 / 5), dtype=torch.float64)
    f = torch.randn(1, 2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    fn = lambda x: fft_convolve(x, kern)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f,))
    assert torch.autograd.gradgradcheck(fn, (f,))
