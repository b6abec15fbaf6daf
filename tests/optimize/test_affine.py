"""affine-opt: recovery of known affine maps, centre-of-mass initialisation, result fields."""

import pytest
import torch

from rdmm_lightning.ops.affine import affine_to_map
from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.ops.warp import compose_maps, warp_image
from rdmm_lightning.optimize import center_of_mass, optimize_affine

from .images import affine_pair, known_affine, textured_image


@pytest.mark.parametrize("shape, tol", [((32, 32), 0.01), ((16, 16, 16), 0.01)])
def test_recovers_known_affine(shape, tol):
    """Rotation 12 deg, scale 1.08 and a translation of ~5% are recovered to ``tol`` in every
    matrix entry (domain units for the translation column)."""
    src, tgt, mat = affine_pair(shape)
    res = optimize_affine(src, tgt)
    assert res.stopped is None
    assert res.model == "affine"
    assert (res.affine - mat).abs().max() < tol
    assert res.warped.shape == src.shape
    assert res.phi_inv.shape == (1, len(shape), *shape)


def test_ncc_recovers_2d_affine_closely():
    src, tgt, mat = affine_pair((32, 32))
    res = optimize_affine(src, tgt, similarity="ncc")
    assert (res.affine - mat).abs().max() < 1e-3


def test_com_init_handles_large_shift():
    """A 35% shift: the LNCC landscape alone cannot bridge it, the centre-of-mass start does."""
    shape = (32, 32)
    sp = domain_spacing(shape)
    src = textured_image(shape, centre=(0.5, 0.5))
    mat = known_affine(2, angle_deg=0.0, scale=1.0, shift=(0.0, 0.0))
    mat[0, :, 2] = torch.tensor([0.35, -0.1])  # phi_inv(x) = x + (0.35, -0.1)
    tgt = warp_image(src, affine_to_map(mat, shape, sp), sp)
    shift = center_of_mass(src, sp) - center_of_mass(tgt, sp)
    assert shift[0, 0] > 0.25
    res = optimize_affine(src, tgt, iterations=(30, 20, 10))
    assert (res.affine[0, :, 2] - mat[0, :, 2]).abs().max() < 0.02
    assert (res.affine[0, :, :2] - torch.eye(2)).abs().max() < 0.03
    ident = optimize_affine(src, tgt, init="identity", iterations=(30, 20, 10))
    err_ident = (ident.affine[0, :, 2] - mat[0, :, 2]).abs().max()
    assert err_ident > (res.affine[0, :, 2] - mat[0, :, 2]).abs().max()


def test_phi_is_inverse_of_phi_inv():
    src, tgt, _ = affine_pair((24, 24))
    res = optimize_affine(src, tgt, iterations=5)
    sp = res.spacing
    comp = compose_maps(res.phi_inv, res.phi, sp)
    ident = identity_map((24, 24), sp)
    # interior only: the composition samples outside the grid near the border
    assert (comp - ident)[..., 4:-4, 4:-4].abs().max() < 1e-4


def test_init_matrix_and_identity_images():
    """Identical images with an identity start stay at the identity."""
    src = textured_image((24, 24))
    res = optimize_affine(src, src.clone(), init="identity", iterations=5)
    eye = torch.cat([torch.eye(2), torch.zeros(2, 1)], 1)
    assert (res.affine[0] - eye).abs().max() < 1e-3
    start = known_affine(2)
    res = optimize_affine(src, src.clone(), init=start, iterations=0)
    assert torch.allclose(res.affine, start)


def test_batch_of_two():
    src, tgt, mat = affine_pair((24, 24))
    res = optimize_affine(torch.cat([src, src]), torch.cat([tgt, tgt]), iterations=(20, 15, 10))
    assert res.affine.shape == (2, 2, 3)
    assert (res.affine - mat).abs().max() < 0.02
