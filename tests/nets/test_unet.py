"""UNet: any input size, padding round trip, output initialisation."""

import pytest
import torch

from rdmm_lightning.nets import UNet, crop_to, pad_to_multiple


@pytest.mark.parametrize("shape", [(32, 32), (17, 23), (9, 41), (8, 8)])
def test_unet_2d_any_size(shape):
    net = UNet(2, 2, 3, features=(4, 8, 8, 8))
    out = net(torch.rand(2, 2, *shape))
    assert out.shape == (2, 3, *shape)


@pytest.mark.parametrize("shape", [(16, 16, 16), (9, 10, 13)])
def test_unet_3d_any_size(shape):
    net = UNet(3, 1, 2, features=(4, 8, 8))
    assert net(torch.rand(1, 1, *shape)).shape == (1, 2, *shape)


def test_pad_and_crop_round_trip():
    x = torch.rand(1, 2, 13, 7, 5)
    padded, pads = pad_to_multiple(x, 8)
    assert all(n % 8 == 0 for n in padded.shape[2:])
    assert torch.equal(crop_to(padded, pads), x)
    same, pads = pad_to_multiple(torch.rand(1, 1, 16, 8), 8)
    assert not any(pads) and same.shape == (1, 1, 16, 8)


def test_output_is_independent_of_padding_layout():
    """Cropping returns exactly the unpadded region: a size that needs no padding gives the same
    values as running the padded tensor directly."""
    torch.manual_seed(0)
    net = UNet(2, 1, 1, features=(4, 8))
    x = torch.rand(1, 1, 15, 16)
    padded, pads = pad_to_multiple(x, 2)
    assert torch.allclose(net(x), crop_to(net(padded), pads), atol=1e-6)


def test_init_output_sets_bias_and_small_weights():
    net = UNet(2, 2, 3, features=(4, 8))
    net.init_output(std=1e-6, bias=[0.1, 0.2, 0.3])
    out = net(torch.rand(1, 2, 12, 12))
    expected = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-3)
    with pytest.raises(ValueError, match="3 entries"):
        net.init_output(bias=[0.0, 1.0])


def test_unet_rejects_wrong_dims():
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        UNet(4, 1, 1)
    with pytest.raises(ValueError, match="2 spatial dims"):
        UNet(2, 1, 1, features=(4,))(torch.rand(1, 1, 8, 8, 8))


def _conv_input_layouts(net: UNet, fmt: torch.memory_format) -> list[bool]:
    layouts: list[bool] = []
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)) and module.in_channels > 1:
            module.register_forward_pre_hook(
                lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=fmt))
            )
    return layouts


@pytest.mark.parametrize("dim", [2, 3])
def test_convolutions_run_channels_last_with_the_same_values(monkeypatch, dim):
    """Every convolution sees a channels-last input (the fast oneDNN/cuDNN layout; float32, as
    trained), the output is back in the standard layout, and the values are those of the
    standard layout (float64)."""
    import rdmm_lightning.nets.unet as unet_module

    torch.manual_seed(0)
    net = UNet(dim, 2, 3, features=(4, 8, 8))
    x = torch.rand(2, 2, *([9, 12, 10][:dim]))
    fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
    layouts = _conv_input_layouts(net, fmt)
    assert net(x).is_contiguous()
    assert layouts and all(layouts)
    net64, x64 = net.double(), x.double()
    out = net64(x64)
    monkeypatch.setattr(unet_module, "channels_last", lambda t: t)
    layouts.clear()
    reference = net64(x64)
    assert not any(layouts)  # the control: without the conversion, the standard layout
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
