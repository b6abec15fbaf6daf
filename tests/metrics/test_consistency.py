"""Inverse consistency error: zero for inverse maps, the known offset otherwise."""

import pytest
import torch

from rdmm_lightning.metrics import inverse_consistency_error
from rdmm_lightning.ops.grid import domain_spacing, identity_map


def _maps(shape, shift_vox, scale=None):
    spacing = domain_spacing(shape)
    ident = identity_map(shape, spacing, dtype=torch.float64)
    h = torch.tensor(spacing, dtype=torch.float64).view(1, -1, *([1] * len(shape)))
    shift = torch.tensor(shift_vox, dtype=torch.float64).view(1, -1, *([1] * len(shape))) * h
    return ident, shift, spacing


@pytest.mark.parametrize("shape", [(12, 10), (8, 9, 7)])
def test_translation_and_its_inverse_are_consistent(shape):
    ident, shift, spacing = _maps(shape, [1.5, -0.5, 0.25][: len(shape)])
    err = inverse_consistency_error(ident + shift, ident - shift, spacing)
    assert err.shape == (1,)
    assert float(err) < 1e-12


def test_same_direction_twice_is_off_by_twice_the_shift():
    # negative control: two maps that are not inverse to each other
    shape = (12, 10)
    ident, shift, spacing = _maps(shape, [0.6, 0.8])  # |shift| = 1 voxel
    err = inverse_consistency_error(ident + shift, ident + shift, spacing)
    assert float(err) == pytest.approx(2.0, rel=1e-9)


def test_scaling_and_its_inverse_are_consistent():
    shape = (16, 14, 12)
    spacing = domain_spacing(shape)
    ident = identity_map(shape, spacing, dtype=torch.float64)
    centre = ident.mean(dim=(2, 3, 4), keepdim=True)
    a = centre + 1.1 * (ident - centre)  # phi_st^{-1}
    b = centre + (ident - centre) / 1.1  # phi_ts^{-1}: maps into the domain
    assert float(inverse_consistency_error(a, b, spacing)) < 1e-9
    wrong = centre + (ident - centre) / 1.2
    assert float(inverse_consistency_error(a, wrong, spacing)) > 0.1


def test_shape_mismatch_is_one_line():
    a = identity_map((8, 8))
    b = identity_map((8, 9))
    with pytest.raises(ValueError, match="must have the shape"):
        inverse_consistency_error(a, b)
