"""bfloat16 mixed precision of the UNets: the convolutions run in bfloat16, weights and outputs
stay float32, float64 inputs are untouched, and a registration network still trains."""

import pytest
import torch
from torch import nn

from rdmm_lightning.nets import UNet
from rdmm_lightning.nets.precision import check_precision
from rdmm_lightning.nets.registration_net import RegistrationNet


def _conv_output_dtypes(net: nn.Module, x: torch.Tensor) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    ]
    net(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("dim", [2, 3])
def test_bfloat16_runs_the_convolutions_in_bfloat16_and_returns_float32(dim):
    torch.manual_seed(0)
    shape = (24, 20) if dim == 2 else (12, 10, 8)
    x = torch.rand(2, 2, *shape)
    exact = UNet(dim, 2, 3, features=(4, 8, 8))
    mixed = UNet(dim, 2, 3, features=(4, 8, 8), precision="bfloat16")
    mixed.load_state_dict(exact.state_dict())
    assert _conv_output_dtypes(exact, x) == {torch.float32}
    assert _conv_output_dtypes(mixed, x) == {torch.bfloat16}
    a, b = exact(x), mixed(x)
    assert b.dtype == torch.float32 and b.shape == a.shape
    # bfloat16 keeps 8 significant bits: close to float32, but not equal (autocast did run)
    scale = a.abs().max()
    assert not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05 * scale


def test_bfloat16_gradients_reach_the_float32_weights():
    torch.manual_seed(0)
    net = UNet(3, 2, 3, features=(4, 8), precision="bfloat16")
    net(torch.rand(1, 2, 8, 8, 8)).square().sum().backward()
    for p in net.parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


def test_float64_inputs_are_not_autocast():
    torch.manual_seed(0)
    exact = UNet(2, 2, 3, features=(4, 8)).double()
    mixed = UNet(2, 2, 3, features=(4, 8), precision="bfloat16").double()
    mixed.load_state_dict(exact.state_dict())
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
    assert torch.equal(exact(x), mixed(x))


def test_unknown_precision_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="'float32' or 'bfloat16'; got 'fp16'"):
        check_precision("fp16")
    with pytest.raises(ValueError, match="network precision"):
        RegistrationNet("rdmm", 2, [0.05, 0.1], network_precision="half")


def test_registration_net_in_bfloat16_predicts_float32_parameters_near_float32():
    torch.manual_seed(0)
    kw = {"prior_h2": [0.5, 0.5], "net_input": "low", "image_force": True}
    exact = RegistrationNet("rdmm", 2, [0.05, 0.1], **kw)
    mixed = RegistrationNet("rdmm", 2, [0.05, 0.1], network_precision="bfloat16", **kw)
    mixed.load_state_dict(exact.state_dict())
    src, tgt = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    spacing = (1 / 31, 1 / 31)
    (m_a, h_a), (m_b, h_b) = (
        n.predict_parameters(src, tgt, (16, 16), spacing) for n in (exact, mixed)
    )
    assert m_b.dtype == h_b.dtype == torch.float32
    assert torch.allclose((h_b**2).sum(1), torch.ones(1, 16, 16))  # normalised in float32
    assert (m_a - m_b).abs().max() < 0.05 * m_a.abs().max()
    assert (h_a - h_b).abs().max() < 1e-2


def test_affine_net_in_bfloat16_returns_float32_matrices_near_float32():
    from rdmm_lightning.nets.affine_net import MultiStepAffineNet

    torch.manual_seed(0)
    exact = MultiStepAffineNet(3, features=(4, 8, 8), pooled=2, hidden=16, num_steps=2)
    mixed = MultiStepAffineNet(
        3, features=(4, 8, 8), pooled=2, hidden=16, num_steps=2, precision="bfloat16"
    )
    torch.nn.init.normal_(exact.head[-1].weight, std=0.05)  # a non-identity prediction
    mixed.load_state_dict(exact.state_dict())
    src, tgt = torch.rand(1, 1, 12, 12, 12), torch.rand(1, 1, 12, 12, 12)
    a, b = exact(src, tgt).matrix, mixed(src, tgt).matrix
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert (a - b).abs().max() < 1e-2


def test_inference_precision_auto_follows_the_hardware_and_explicit_values_win(monkeypatch):
    from rdmm_lightning.nets.precision import native_bfloat16, resolve_inference_precision

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # no bfloat16 dot products
    assert not native_bfloat16("cpu")
    assert resolve_inference_precision("auto", "bfloat16", "cpu") == "float32"
    assert resolve_inference_precision(None, "bfloat16", "cpu") == "float32"
    assert resolve_inference_precision("bfloat16", "float32", "cpu") == "bfloat16"
    assert resolve_inference_precision("auto", "float32", "cpu") == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    native = native_bfloat16("cpu")  # now the CPU's own answer
    assert resolve_inference_precision("auto", "bfloat16", "cpu") == (
        "bfloat16" if native else "float32"
    )
    with pytest.raises(ValueError, match="'auto', 'float32' or 'bfloat16'; got 'half'"):
        resolve_inference_precision("half", "float32", "cpu")


def test_set_network_precision_reaches_every_unet_of_a_registration_net():
    from rdmm_lightning.nets.precision import set_network_precision

    net = RegistrationNet("rdmm", 2, [0.05, 0.1], network_precision="bfloat16")
    unets = [m for m in net.modules() if isinstance(m, UNet)]
    assert len(unets) == 2 and all(u.precision == "bfloat16" for u in unets)
    assert set_network_precision(net, "float32") == 2
    assert all(u.precision == "float32" for u in unets)
    with pytest.raises(ValueError, match="network precision must be"):
        set_network_precision(net, "half")
