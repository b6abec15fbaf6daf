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
