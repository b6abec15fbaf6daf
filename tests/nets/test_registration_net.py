"""The iterated deformable registration net: shapes, composition of steps, forward maps."""

import pytest
import torch

from rdmm_lightning.nets import RegistrationNet
from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.ops.warp import compose_maps, warp_image

SIGMAS = (0.05, 0.1, 0.15)


@pytest.mark.parametrize("model", ["svf", "lddmm", "rdmm"])
@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 11)])
def test_shapes_and_near_identity_at_init(model, shape):
    torch.manual_seed(0)
    net = RegistrationNet(model, len(shape), SIGMAS, features=(4, 8), solver=None)
    sp = domain_spacing(shape)
    src, tgt = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    with torch.no_grad():
        out = net(src, tgt, sp, num_steps=2, forward_map=True)
    low = tuple(max(8, round(n * 0.5)) for n in shape)
    assert out.phi_inv.shape == out.phi.shape == (2, len(shape), *shape)
    assert out.warped.shape == src.shape
    assert len(out.steps) == 2 and out.steps[0].m0.shape == (2, len(shape), *low)
    assert (out.steps[0].h0 is not None) == (model == "rdmm")
    ident = identity_map(shape, sp)
    assert float((out.phi_inv - ident).abs().max()) < 1e-2
    if model == "rdmm":
        s0, s1 = net.sigma_maps(out.steps[-1], shape, sp, out.low_spacing)
        assert s0.shape == s1.shape == (2, 1, *shape)
        assert float(s0.min()) >= min(SIGMAS) - 1e-6 and float(s0.max()) <= max(SIGMAS) + 1e-6


def _scaled_net(model: str, shape, scale: float = 0.4) -> RegistrationNet:
    """A net whose momentum output is large enough for a visible deformation."""
    torch.manual_seed(3)
    net = RegistrationNet(model, len(shape), SIGMAS, features=(4, 8)).double()
    torch.nn.init.normal_(net.momentum_net.unet.out.weight, std=scale)
    return net


@pytest.mark.parametrize("model", ["svf", "rdmm"])
def test_steps_compose_and_source_is_warped_once(model):
    shape = (20, 18)
    sp = domain_spacing(shape)
    net = _scaled_net(model, shape)
    src = torch.rand(1, 1, *shape, dtype=torch.float64)
    tgt = torch.rand_like(src)
    with torch.no_grad():
        out = net(src, tgt, sp, num_steps=2)
        first = out.steps[0].shot.phi_inv
        assert torch.allclose(out.steps[1].frame_map, first)
        # step 2's map = step 1's map o (step 2's upsampled psi^{-1})
        psi2 = net.shoot(out.steps[1].m0, out.steps[1].h0, shape, sp).phi_inv
        assert torch.allclose(out.phi_inv, compose_maps(first, psi2, sp), atol=1e-10)
        assert torch.allclose(out.warped, warp_image(src, out.phi_inv, sp))
        assert float((out.phi_inv - identity_map(shape, sp, dtype=src.dtype)).abs().max()) > 0.01


def test_forward_map_inverts_pull_back():
    shape = (24, 24)
    sp = domain_spacing(shape)
    net = _scaled_net("lddmm", shape, 0.2)
    src = torch.rand(1, 1, *shape, dtype=torch.float64)
    with torch.no_grad():
        out = net(src, torch.rand_like(src), sp, num_steps=2, forward_map=True)
    ident = identity_map(shape, sp, dtype=src.dtype)
    moved = float((out.phi_inv - ident).abs().max())
    err = compose_maps(out.phi_inv, out.phi, sp) - ident
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert moved > 0.01
    assert float(err[inner].abs().max()) < 0.1 * moved


def test_low_resolution_inputs_and_gradients():
    shape = (16, 16)
    sp = domain_spacing(shape)
    net = RegistrationNet("rdmm", 2, SIGMAS, features=(4, 8), net_input="low", lowres_factor=0.5)
    src, tgt = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    out = net(src, tgt, sp)
    (out.warped - tgt).pow(2).mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_arguments_checked():
    with pytest.raises(ValueError, match="model must be one of"):
        RegistrationNet("demons", 2, SIGMAS)
    with pytest.raises(ValueError, match="net_input"):
        RegistrationNet("svf", 2, SIGMAS, net_input="half")
    with pytest.raises(ValueError, match="lowres_factor"):
        RegistrationNet("svf", 2, SIGMAS, lowres_factor=0.0)


@pytest.mark.parametrize("net_input", ["low", "full"])
def test_image_force_uses_the_spacing_of_the_grid_the_net_sees(net_input):
    """m0 = force_scale * f with f on the net's input grid: the shooting grid's spacing for
    low-resolution inputs (a wrong spacing scales f by the grid ratio)."""
    from rdmm_lightning.ops import image_force
    from rdmm_lightning.ops.resample import resample_image

    torch.manual_seed(3)
    net = RegistrationNet("lddmm", 2, [0.1], features=(4, 8), net_input=net_input, image_force=True)
    torch.nn.init.zeros_(net.momentum_net.unet.out.weight)
    with torch.no_grad():
        net.momentum_net.force_scale.fill_(0.5)
    source, target = torch.rand(1, 1, 32, 28), torch.rand(1, 1, 32, 28)
    spacing = (1 / 31, 1 / 31)
    low_shape, low_spacing = net.grids((32, 28), spacing)
    m0, _ = net.predict_parameters(source, target, low_shape, spacing)
    if net_input == "low":
        s, t = resample_image(source, low_shape), resample_image(target, low_shape)
        expected = 0.5 * image_force(s, t, low_spacing)
    else:
        expected = resample_image(0.5 * image_force(source, target, spacing), low_shape, False)
    assert torch.allclose(m0, expected, atol=1e-6)
