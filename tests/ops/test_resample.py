import pytest
import torch

from rdmm_lightning.ops import identity_map, resample_image, resample_map


@pytest.mark.parametrize("shape,new", [((9, 13), (17, 25)), ((5, 7, 9), (9, 13, 17))])
def test_resample_affine_map_is_exact(shape, new):
    dim = len(shape)
    a = torch.eye(dim, dtype=torch.float64) + 0.1 * torch.randn(dim, dim, dtype=torch.float64)
    phi = torch.einsum("ij,bj...->bi...", a, identity_map(shape, dtype=torch.float64)) + 0.05
    up = resample_map(phi, new)
    expected = torch.einsum("ij,bj...->bi...", a, identity_map(new, dtype=torch.float64)) + 0.05
    torch.testing.assert_close(up, expected)
    torch.testing.assert_close(resample_map(up, shape), phi)


def test_antialiased_downsampling_removes_checkerboard():
    n = 64
    idx = torch.arange(n)
    board = ((idx.view(-1, 1) + idx.view(1, -1)) % 2).double().view(1, 1, n, n)
    plain = resample_image(board, (16, 16), antialias=False)
    smooth = resample_image(board, (16, 16), antialias=True)
    assert (smooth[..., 2:-2, 2:-2] - 0.5).abs().max() < 0.05
    assert (plain - 0.5).abs().max() > 0.2


def test_resample_image_keeps_constant_and_shape():
    img = torch.full((2, 3, 10, 12, 8), 0.7)
    out = resample_image(img, (5, 6, 4))
    assert out.shape == (2, 3, 5, 6, 4)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))
