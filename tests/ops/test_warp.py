import pytest
import torch

from rdmm_lightning.ops import compose_maps, identity_map, warp_image, warp_labels
from rdmm_lightning.ops.grid import domain_spacing

SHAPES = [(12, 10), (8, 9, 7)]
DTYPES = [torch.float32, torch.float64]


def _translation(shape, shift_vox, dtype):
    sp = domain_spacing(shape)
    ident = identity_map(shape, dtype=dtype)
    t = torch.tensor([s * h for s, h in zip(shift_vox, sp)], dtype=dtype)
    return ident + t.view(1, -1, *[1] * len(shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_warp_is_exact(shape, dtype):
    img = torch.rand(3, 2, *shape, dtype=dtype)
    ident = identity_map(shape, dtype=dtype).expand(3, -1, *shape)
    torch.testing.assert_close(warp_image(img, ident), img, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_integer_translation_shifts_voxels(shape):
    img = torch.rand(2, 1, *shape, dtype=torch.float64)
    shift = (2,) + (1,) * (len(shape) - 1)
    warped = warp_image(img, _translation(shape, shift, torch.float64).expand(2, -1, *shape))
    src = img[(slice(None), slice(None)) + tuple(slice(s, None) for s in shift)]
    dst = warped[(slice(None), slice(None)) + tuple(slice(0, n - s) for n, s in zip(shape, shift))]
    torch.testing.assert_close(dst, src)
    # what comes from outside the image is zero
    assert warped[:, :, -1].abs().max() == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_warp_labels_keeps_dtype_and_values(shape):
    labels = torch.randint(0, 5, (2, 1, *shape)) * 40
    phi = _translation(shape, (0.4,) * len(shape), torch.float32).expand(2, -1, *shape)
    out = warp_labels(labels, phi)
    assert out.dtype == labels.dtype
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()) | {0}
    # 0.4 voxel shift rounds to the same voxel
    inner = (slice(None), slice(None)) + (slice(0, -1),) * len(shape)
    assert torch.equal(out[inner], labels[inner])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_compose_translation_with_its_inverse(shape, dtype):
    a = _translation(shape, (1.5,) * len(shape), dtype).expand(2, -1, *shape)
    b = _translation(shape, (-1.5,) * len(shape), dtype).expand(2, -1, *shape)
    ident = identity_map(shape, dtype=dtype).expand(2, -1, *shape)
    # displacement composition keeps translations exact, even near the border
    torch.testing.assert_close(compose_maps(a, b), ident, atol=1e-6, rtol=0)


def test_compose_order():
    shape = (16, 16)
    dtype = torch.float64
    ident = identity_map(shape, dtype=dtype)
    scale = 0.5 + 0.5 * ident  # a(x) = 0.5 + x/2
    shift = _translation(shape, (2, 0), dtype)  # b(x) = x + 2 h
    ab = compose_maps(scale, shift)  # a(b(x)) = 0.5 + (x + 2h)/2
    expected = 0.5 + 0.5 * shift
    torch.testing.assert_close(ab[..., 2:-2, :], expected[..., 2:-2, :])


def test_warp_shape_errors():
    with pytest.raises(ValueError, match="spatial dims"):
        warp_image(torch.rand(1, 1, 5, 5, 5), identity_map((5, 5)))
    with pytest.raises(ValueError, match="batch"):
        warp_image(torch.rand(2, 1, 5, 5), identity_map((5, 5)).expand(3, -1, 5, 5))
    with pytest.raises(ValueError, match="floating"):
        warp_image(torch.ones(1, 1, 5, 5, dtype=torch.int64), identity_map((5, 5)))
