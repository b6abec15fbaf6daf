"""The one 1D Gaussian kernel builder: taps, truncation, normalisation, dtype."""

import math

import numpy as np
import pytest
import torch

from rdmm_lightning.ops.gaussian import gaussian_taps, gaussian_window


@pytest.mark.parametrize("sigma, truncate", [(0.3, 4.0), (1.0, 3.0), (2.7, 4.0), (5.0, 3.0)])
def test_taps_are_the_truncated_normalised_gaussian(sigma, truncate):
    g = gaussian_taps(sigma, truncate)
    r = max(1, math.ceil(truncate * sigma))
    assert g.shape == (2 * r + 1,) and g.dtype == torch.float64
    x = np.arange(-r, r + 1)
    ref = np.exp(-(x**2) / (2 * sigma**2))
    np.testing.assert_allclose(g.numpy(), ref / ref.sum(), rtol=1e-14, atol=1e-17)
    assert torch.equal(g, g.flip(0))  # symmetric
    assert abs(float(g.sum()) - 1.0) < 1e-15


def test_zero_sigma_is_an_impulse_and_dtype_is_kept():
    assert torch.equal(gaussian_taps(0.0, 4.0), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    g32 = gaussian_taps(1.3, 3.0, dtype=torch.float32)
    assert g32.dtype == torch.float32
    # computed in float32, not rounded from float64: the same arithmetic as a float32 caller's
    x = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / 1.3) ** 2)
    assert torch.equal(g32, k / k.sum())


def test_window_has_peak_one_at_given_offsets():
    j = torch.arange(-1, 3, dtype=torch.float64)  # an even window: one extra tap on the right
    w = gaussian_window(j, 0.75)
    assert float(w[1]) == 1.0
    torch.testing.assert_close(w, torch.exp(-(j**2) / (2 * 0.75**2)), rtol=1e-15, atol=0)
    # offsets are used as given (-1 and 1 weigh the same, the extra tap at 2 less)
    assert float(w[0]) == float(w[2]) and float(w[3]) < float(w[0])
