"""Pre-weight parametrisations: raw <-> h round trip and region pre-weights (sharp and blended)."""

import pytest
import torch

from rdmm_lightning.ops.pre_weights import (
    PRE_WEIGHT_FLOOR,
    pre_weights_from_raw,
    pre_weights_from_region,
    raw_from_pre_weights,
)


def test_raw_round_trip_and_floor():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) + 0.05
    h = h / h.pow(2).sum(1, keepdim=True).sqrt()
    torch.testing.assert_close(pre_weights_from_raw(raw_from_pre_weights(h)), h)
    x = raw_from_pre_weights(torch.zeros(1, 2, 3, 3))
    assert bool((x == torch.tensor(PRE_WEIGHT_FLOOR).log()).all())
    hx = pre_weights_from_raw(torch.randn(2, 4, 3, 3, generator=g) * 20)
    assert bool(torch.isfinite(hx).all()) and bool((hx >= 0).all())
    torch.testing.assert_close(hx.pow(2).sum(1), torch.ones(2, 3, 3))


def test_region_pre_weights_sharp_and_blended():
    inside = torch.zeros(1, 1, 6, 7, dtype=torch.float64)
    inside[..., 1:4, 2:5] = 1.0
    h = pre_weights_from_region(inside, [0.1, 0.4, 0.5, 0.0], [0, 0, 2, 2])
    assert h.shape == (1, 4, 6, 7) and h.dtype == torch.float64
    torch.testing.assert_close(h.pow(2).sum(1), torch.ones(1, 6, 7, dtype=torch.float64))
    torch.testing.assert_close(h[0, :, 2, 3] ** 2, torch.tensor([0.1, 0.4, 0.5, 0.0]).double())
    torch.testing.assert_close(h[0, :, 0, 0] ** 2, torch.tensor([0, 0, 0.5, 0.5]).double())
    # a half-way voxel blends h (not h^2) and is renormalised
    inside[..., 0, 0] = 0.5
    mid = pre_weights_from_region(inside, [1, 0], [0, 1])[0, :, 0, 0]
    torch.testing.assert_close(mid, torch.tensor([0.5, 0.5]).double().sqrt())


@pytest.mark.parametrize(
    "inside_h2, outside_h2, needle",
    [
        ([-1, 1], [0, 1], "inside must be non-negative"),
        ([1, 1], [0, 0], "outside must be non-negative with a positive sum"),
        ([1, 1], [1], "outside must be 2 values"),
        ([], [1], "inside must be a non-empty list"),
    ],
)
def test_region_pre_weights_reject_bad_lists(inside_h2, outside_h2, needle):
    with pytest.raises(ValueError, match=needle):
        pre_weights_from_region(torch.ones(1, 1, 3, 3), inside_h2, outside_h2)


def test_region_pre_weights_need_a_float_membership():
    with pytest.raises(ValueError, match=r"floating-point \(B, 1, \*S\)"):
        pre_weights_from_region(torch.ones(1, 1, 3, 3, dtype=torch.bool), [1], [1])
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\)"):
        pre_weights_from_region(torch.ones(1, 2, 3, 3), [1], [1])
