import pytest
import torch

from rdmm_lightning.losses import (
    SIMILARITY_NAMES,
    LNCCLoss,
    MultiKernelLNCCLoss,
    MutualInformationLoss,
    NCCLoss,
    SSDLoss,
    lncc_loss,
    mk_lncc_loss,
    mutual_information_loss,
    ncc_loss,
    similarity_from_name,
    ssd_loss,
)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("ssd", SSDLoss),
        ("ncc", NCCLoss),
        ("lncc", LNCCLoss),
        ("mk-lncc", MultiKernelLNCCLoss),
        ("MK_LNCC", MultiKernelLNCCLoss),
        ("mi", MutualInformationLoss),
    ],
)
def test_factory_builds_modules(name, cls):
    assert isinstance(similarity_from_name(name), cls)


def test_factory_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="ssd, ncc, lncc, mk-lncc, mi"):
        similarity_from_name("cc")
    assert SIMILARITY_NAMES == ("ssd", "ncc", "lncc", "mk-lncc", "mi")


def test_modules_match_functions():
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.3).float()
    cases = [
        (similarity_from_name("ssd"), ssd_loss(x, y, mask)),
        (similarity_from_name("ncc", eps=1e-6), ncc_loss(x, y, mask, eps=1e-6)),
        (LNCCLoss(5, "gaussian", dilation=2), lncc_loss(x, y, 5, "gaussian", mask, dilation=2)),
        (similarity_from_name("mk-lncc"), mk_lncc_loss(x, y, mask=mask)),
        (
            MultiKernelLNCCLoss([3, 7], [0.5, 0.5]),
            mk_lncc_loss(x, y, [3, 7], [0.5, 0.5], mask=mask),
        ),
        (
            MutualInformationLoss(16, normalized=True),
            mutual_information_loss(x, y, 16, mask=mask, normalized=True),
        ),
    ]
    for module, expected in cases:
        torch.testing.assert_close(module(x, y, mask), expected)


def test_module_reduction_none_and_3d_gradient():
    x = torch.rand(3, 1, 16, 16, 16, requires_grad=True)
    y = torch.rand(3, 1, 16, 16, 16)
    loss = similarity_from_name("lncc", window=5, reduction="none")(x, y)
    assert loss.shape == (3,)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_module_bad_options():
    with pytest.raises(ValueError, match="reduction"):
        SSDLoss(reduction="sum")
    with pytest.raises(ValueError, match="kernel"):
        LNCCLoss(kernel="triangle")
    with pytest.raises(ValueError, match="kernel"):
        MultiKernelLNCCLoss(kernel="triangle")
    with pytest.raises(ValueError, match="num_bins"):
        MutualInformationLoss(num_bins=1)
