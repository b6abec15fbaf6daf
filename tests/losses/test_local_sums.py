import dataclasses
import itertools
import math

import pytest
import torch

from rdmm_lightning.losses.local_sums import (
    _local_operator,
    box_sum,
    gaussian_sum,
    local_mean,
    local_sum,
)
from rdmm_lightning.ops.separable_smoothing import apply_separable


def naive_window_sum(x, window, dilation, weight=None):
    """Direct loop over voxels and window taps (zero outside the image)."""
    shape = x.shape[2:]
    out = torch.zeros_like(x)
    ranges = [range(-((k - 1) // 2), k - (k - 1) // 2) for k in window]
    for idx in itertools.product(*(range(n) for n in shape)):
        total = torch.zeros_like(x[(slice(None), slice(None)) + (0,) * len(shape)])
        for off in itertools.product(*ranges):
            pos = tuple(i + d * o for i, d, o in zip(idx, dilation, off))
            if all(0 <= p < n for p, n in zip(pos, shape)):
                w = 1.0 if weight is None else weight(off)
                total = total + w * x[(slice(None), slice(None), *pos)]
        out[(slice(None), slice(None), *idx)] = total
    return out


@pytest.mark.parametrize(
    "window, dilation",
    [((3, 3), (1, 1)), ((4, 2), (2, 1)), ((9, 20), (1, 3)), ((1, 5), (1, 2)), ((6, 6), (2, 2))],
)
def test_box_sum_matches_loop_2d(window, dilation):
    x = torch.rand(2, 3, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(box_sum(x, window, dilation), naive_window_sum(x, window, dilation))


def test_box_sum_matches_loop_3d():
    x = torch.rand(1, 2, 5, 4, 6, dtype=torch.float64)
    window, dilation = (3, 4, 5), (2, 1, 1)
    torch.testing.assert_close(box_sum(x, window, dilation), naive_window_sum(x, window, dilation))


def test_box_sum_int_window_and_ones_count():
    x = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    out = box_sum(x, 3)
    torch.testing.assert_close(box_sum(x, torch.tensor(3)), out)
    assert out[0, 0, 2, 2] == 9 and out[0, 0, 0, 0] == 4 and out[0, 0, 0, 3] == 6


def test_gaussian_sum_matches_loop():
    x = torch.rand(2, 3, 7, 6, dtype=torch.float64)
    sigma, window, dilation = (1.0, 0.7), (5, 4), (2, 1)

    def weight(off):
        return math.prod(math.exp(-0.5 * (o / s) ** 2) for o, s in zip(off, sigma))

    expected = naive_window_sum(x, window, dilation, weight)
    torch.testing.assert_close(gaussian_sum(x, window, sigma, dilation), expected)


def test_gaussian_sum_default_sigma_and_3d():
    x = torch.rand(1, 1, 5, 6, 4, dtype=torch.float64)

    def weight(off):  # default sigma = (k - 1) / 4 = 1 for k = 5
        return math.prod(math.exp(-0.5 * o**2) for o in off)

    expected = naive_window_sum(x, (5, 5, 5), (1, 1, 1), weight)
    torch.testing.assert_close(local_sum(x, 5, "gaussian"), expected)


def test_local_sum_errors():
    x = torch.rand(1, 1, 5, 5)
    with pytest.raises(ValueError, match="kernel"):
        local_sum(x, 3, "cubic")
    with pytest.raises(ValueError, match="window"):
        box_sum(x, (3, 3, 3))
    with pytest.raises(ValueError, match=">= 1"):
        box_sum(x, 0)
    with pytest.raises(ValueError, match=r"\(B, C, \*S\)"):
        box_sum(torch.rand(1, 1, 5), 3)


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
@pytest.mark.parametrize(
    "shape, window, dilation",
    [((7, 6), (3, 4), (1, 2)), ((5, 4, 6), (3, 4, 5), (2, 1, 1)), ((6, 5), 9, 1)],
)
def test_local_mean_is_sum_over_window_weight(kernel, shape, window, dilation):
    """The one-pass mean (division folded into the axis matrices) equals the window sum divided
    by the window sum of ones, the border (truncated windows) included."""
    x = torch.rand(2, 3, *shape, dtype=torch.float64)
    ones = torch.ones(1, 1, *shape, dtype=torch.float64)
    expected = local_sum(x, window, kernel, dilation) / local_sum(ones, window, kernel, dilation)
    torch.testing.assert_close(local_mean(x, window, kernel, dilation), expected)


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
@pytest.mark.parametrize("mean", [False, True])
def test_local_sums_gradcheck_even_dilated_windows(kernel, mean):
    """The backward pass is the operator's transpose: even windows (one more tap on the
    positive side) and row-normalised means are not symmetric, so applying the operator itself
    to the gradient would be wrong here."""
    x = torch.rand(1, 2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    fn = local_mean if mean else local_sum
    assert torch.autograd.gradcheck(lambda a: fn(a, (4, 2, 3), kernel, (1, 2, 1)), (x,))
    assert torch.autograd.gradgradcheck(lambda a: fn(a, (4, 2, 3), kernel, (1, 2, 1)), (x,))


def test_local_sums_backward_negative_control():
    """Negative control for the test above: the same operator marked symmetric (backward = the
    operator, not its transpose) gives a wrong gradient for an even window."""
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    op = _local_operator((6, 5), (4, 2), (1, 1), "box", (0.0, 0.0), False, x.dtype, x.device)
    assert not op.symmetric
    grad = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    (right,) = torch.autograd.grad(apply_separable(x, op), x, grad)
    wrong_op = dataclasses.replace(op, symmetric=True)
    (wrong,) = torch.autograd.grad(apply_separable(x, wrong_op), x, grad)
    expected = naive_window_sum(grad, (4, 2), (-1, -1))  # adjoint: the mirrored window
    torch.testing.assert_close(right, expected)
    assert not torch.allclose(wrong, expected)


def test_local_sums_keep_dtype_and_cache_per_grid():
    x = torch.rand(1, 1, 8, 8, dtype=torch.float32)
    assert box_sum(x, 3).dtype == torch.float32
    op = _local_operator((8, 8), (3, 3), (1, 1), "box", (0.0, 0.0), False, x.dtype, x.device)
    again = _local_operator((8, 8), (3, 3), (1, 1), "box", (0.0, 0.0), False, x.dtype, x.device)
    assert op is again and op.symmetric
