"""Momentum and pre-weight heads: shapes on the shooting grid and pre-weight constraints."""

import math

import pytest
import torch

from rdmm_lightning.nets import MomentumNet, PreWeightNet


def test_momentum_net_low_res_output_and_small_init():
    torch.manual_seed(0)
    net = MomentumNet(2, features=(4, 8, 8))
    m0 = net(torch.rand(2, 1, 32, 30), torch.rand(2, 1, 32, 30), (16, 15))
    assert m0.shape == (2, 2, 16, 15)
    assert float(m0.detach().abs().max()) < 0.05
    m3 = MomentumNet(3, features=(4, 8))(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16))
    assert m3.shape == (1, 3, 16, 16, 16)


def test_momentum_clamp():
    net = MomentumNet(2, features=(4, 8), clamp=0.01)
    torch.nn.init.normal_(net.unet.out.weight, std=10.0)
    m0 = net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    assert float(m0.detach().abs().max()) <= 0.01 + 1e-7


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("dim", [2, 3])
def test_pre_weights_non_negative_and_unit_norm(activation, dim):
    """h >= 0 and sum_i h_i^2 = 1 everywhere, also for a randomly perturbed (large) net."""
    torch.manual_seed(1)
    net = PreWeightNet(dim, 4, features=(4, 8), activation=activation)
    for p in net.parameters():
        p.data.add_(torch.randn_like(p) * 0.5)
    shape = (12,) * dim
    h = net(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape), (6,) * dim).detach()
    assert h.shape == (2, 4, *(6,) * dim)
    assert float(h.min()) >= 0
    assert torch.allclose(h.pow(2).sum(1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_pre_weight_prior_at_init(activation):
    net = PreWeightNet(2, 4, prior_h2=(1, 3, 3, 3), features=(4, 8), activation=activation)
    h = net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)).detach()
    expected = torch.tensor([0.1, 0.3, 0.3, 0.3]).sqrt().view(1, 4, 1, 1)
    assert torch.allclose(h, expected.expand_as(h), atol=5e-3)


def test_pre_weight_zero_prior_entry_stays_small():
    net = PreWeightNet(2, 2, prior_h2=(0.0, 1.0), features=(4,))
    h = net(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)).detach()
    assert float(h[:, 0].max()) < 0.01
    assert math.isclose(float(h[:, 1].min()), 1.0, abs_tol=1e-4)


def test_pre_weight_arguments_checked():
    with pytest.raises(ValueError, match="prior_h2"):
        PreWeightNet(2, 3, prior_h2=(1.0, 1.0))
    with pytest.raises(ValueError, match="activation"):
        PreWeightNet(2, 3, activation="softmax")


def test_image_force_head_adds_a_learnt_multiple_of_the_force():
    """With the UNet's output layer zeroed, m0 is exactly force_scale * f (the skip), f from the
    images on the net's grid; force_scale starts at 0 (small initial momenta); the force
    channels widen the UNet input; spacing is required."""
    from rdmm_lightning.ops import image_force

    torch.manual_seed(2)
    net = MomentumNet(2, features=(4, 8), image_force=True)
    assert net.unet.down[0][0].in_channels == 4
    assert float(net.force_scale) == 0.0
    moving, target = torch.rand(1, 1, 16, 12), torch.rand(1, 1, 16, 12)
    spacing = (1 / 15, 1 / 15)
    torch.nn.init.zeros_(net.unet.out.weight)
    with torch.no_grad():
        net.force_scale.fill_(0.3)
    m0 = net(moving, target, None, spacing)
    assert torch.allclose(m0, 0.3 * image_force(moving, target, spacing))
    with pytest.raises(ValueError, match="domain spacings"):
        net(moving, target)
    assert MomentumNet(2, features=(4, 8)).force_scale is None
