import pytest
import torch

from rdmm_lightning.ops.grid import (
    check_map,
    domain_spacing,
    identity_map,
    low_res_shape,
    to_grid_sample,
)


def test_parity_spacing_spans_unit_domain():
    assert domain_spacing((11, 5)) == (0.1, 0.25)
    ident = identity_map((11, 5), dtype=torch.float64)
    assert ident.shape == (1, 2, 11, 5)
    assert ident[0, 0, -1, 0] == pytest.approx(1.0)
    assert ident[0, 1, 0, -1] == pytest.approx(1.0)
    assert ident[0, 0, 3, 2] == pytest.approx(0.3)


def test_physical_spacing_keeps_aspect_ratio():
    h = domain_spacing((11, 21, 6), "physical", (2.0, 1.0, 3.0))
    assert max(hd * (n - 1) for hd, n in zip(h, (11, 21, 6))) == pytest.approx(1.0)
    assert h[0] / h[1] == pytest.approx(2.0)
    assert h[2] / h[1] == pytest.approx(3.0)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7)])
def test_grid_sample_coordinates_of_identity_are_the_corners(shape):
    ident = identity_map(shape, dtype=torch.float64)
    g = to_grid_sample(ident, shape, domain_spacing(shape))
    assert g.shape == (1, *shape, len(shape))
    assert g.min() == pytest.approx(-1.0) and g.max() == pytest.approx(1.0)
    # grid_sample's x is the last tensor axis: at index [..., 0, ..., n-1] x must be +1
    last = (0,) * (len(shape) - 1) + (shape[-1] - 1,)
    assert g[(0, *last, 0)] == pytest.approx(1.0)
    assert g[(0, *last, len(shape) - 1)] == pytest.approx(-1.0)


def test_low_res_shape():
    assert low_res_shape((200, 200), 0.5) == (100, 100)
    assert low_res_shape((80, 192, 192), 0.5) == (40, 96, 96)
    assert low_res_shape((12, 40), 0.25) == (8, 10)
    with pytest.raises(ValueError, match="factor"):
        low_res_shape((10, 10), 0)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="mode"):
        domain_spacing((4, 4), "voxel")
    with pytest.raises(ValueError, match="shape"):
        domain_spacing((4,))
    with pytest.raises(ValueError, match=r"phi must have shape \(B, D, \*S\)"):
        check_map(torch.zeros(1, 3, 4, 4))
