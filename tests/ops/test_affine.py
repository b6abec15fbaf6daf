"""Affine algebra of pull-back maps: composition order, centred parameters, inversion, maps."""

import pytest
import torch

from rdmm_lightning.ops.affine import (
    affine_deviation,
    affine_to_map,
    check_affine,
    compose_affine,
    domain_centre,
    identity_affine,
    invert_affine,
    matrix_from_params,
    params_from_matrix,
)
from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.ops.warp import compose_maps
from tests.helpers import inside_domain, rotation_affine
from tests.optimize.images import known_affine


@pytest.mark.parametrize("dim", [2, 3])
def test_compose_affine_matches_composing_the_maps(dim):
    """Two known affines: the matrix product equals sampling A1 at A2 (``A1 o A2``), and the
    reversed product (the reference code's order) does not."""
    shape = (21, 17) if dim == 2 else (11, 9, 10)
    sp = domain_spacing(shape)
    a1 = rotation_affine(0.3, [0.5] * dim, [0.05] + [0.0] * (dim - 1), dim)
    a2 = rotation_affine(-0.2, [0.4] * dim, [0.0] * (dim - 1) + [-0.07], dim)
    a2[:, :, :dim] *= 1.1  # and a scaling
    m1, m2 = affine_to_map(a1, shape, sp), affine_to_map(a2, shape, sp)
    expected = compose_maps(m1, m2, sp)  # (A1 o A2)(x) = A1(A2(x))
    got = affine_to_map(compose_affine(a1, a2), shape, sp)
    inside = inside_domain(m2, shape, sp)  # where sampling A1 at A2(x) needs no padding
    assert int(inside.sum()) > 0.5 * inside.numel()
    assert torch.allclose(got[inside], expected[inside], atol=1e-10)
    wrong = affine_to_map(compose_affine(a2, a1), shape, sp)
    assert float((wrong - expected)[inside].abs().max()) > 1e-2


def test_params_round_trip_and_identity():
    centre = torch.tensor([0.5, 0.25], dtype=torch.float64)
    params = torch.randn(3, 6, dtype=torch.float64) * 0.1
    matrix = matrix_from_params(params, centre)
    assert torch.allclose(params_from_matrix(matrix, centre), params)
    eye = matrix_from_params(torch.zeros(1, 6, dtype=torch.float64), centre)
    assert torch.equal(eye, identity_affine(1, 2, eye))
    # the centre is fixed by a pure linear part
    lin = torch.tensor([[0.2, -0.1, 0.1, 0.05, 0.0, 0.0]], dtype=torch.float64)
    m = matrix_from_params(lin, centre)
    assert torch.allclose(m[0, :, :2] @ centre + m[0, :, 2], centre)
    assert torch.allclose(affine_deviation(m, centre), lin.pow(2).sum(1))
    with pytest.raises(ValueError, match=r"params must have shape \(B, 6\)"):
        matrix_from_params(torch.zeros(1, 5), centre)


def test_domain_centre():
    like = torch.zeros((), dtype=torch.float64)
    centre = domain_centre((5, 9), (0.25, 0.125), like)
    assert torch.equal(centre, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert domain_centre((3, 4, 5), (1.0, 1.0, 2.0), like).tolist() == [1.0, 1.5, 4.0]


def test_invert_affine():
    m = rotation_affine(0.4, [0.5, 0.5], [0.1, -0.05])
    assert torch.allclose(compose_affine(m, invert_affine(m)), identity_affine(1, 2, m), atol=1e-12)


def test_affine_map_and_inverse_roundtrip():
    mat = known_affine(3)
    inv = invert_affine(mat)
    eye = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1)
    a, b = mat[0, :, :3], mat[0, :, 3]
    ai, bi = inv[0, :, :3], inv[0, :, 3]
    assert torch.allclose(a @ ai, eye[:, :3], atol=1e-6)
    assert torch.allclose(a @ bi + b, torch.zeros(3), atol=1e-6)
    sp = domain_spacing((5, 6, 7))
    phi = affine_to_map(mat, (5, 6, 7), sp)
    x = identity_map((5, 6, 7), sp)[0, :, 1, 2, 3]
    assert torch.allclose(phi[0, :, 1, 2, 3], a @ x + b, atol=1e-6)


def test_affine_to_map_identity():
    shape = (9, 7)
    sp = domain_spacing(shape)
    eye = identity_affine(2, 2, torch.zeros(()))
    assert torch.allclose(
        affine_to_map(eye, shape, sp), identity_map(shape, sp).expand(2, -1, -1, -1)
    )
    with pytest.raises(ValueError, match="D \\+ 1"):
        affine_to_map(torch.zeros(1, 2, 2), shape, sp)
    with pytest.raises(ValueError, match="shape must have 2 entries"):
        affine_to_map(eye, (9, 7, 3), sp)


def test_check_affine():
    assert check_affine(torch.zeros(4, 3, 4)) == 3
    assert check_affine(torch.zeros(1, 2, 3), batch=1, dim=2) == 2
    with pytest.raises(ValueError, match=r"init must have shape \(B, D, D \+ 1\) with D in"):
        check_affine(torch.zeros(1, 4, 5), "init")
    with pytest.raises(ValueError, match=r"init must have shape .* = \(2, 2, 3\); got \(1, 2, 3\)"):
        check_affine(torch.zeros(1, 2, 3), "init", batch=2, dim=2)
    with pytest.raises(ValueError, match="got list"):
        check_affine([[0.0]], "init")
