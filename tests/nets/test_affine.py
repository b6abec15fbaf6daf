"""Affine maths and the multi-step affine net: composition order of pull-back maps."""

import math

import pytest
import torch

from rdmm_lightning.nets import (
    MultiStepAffineNet,
    affine_deviation,
    affine_to_map,
    compose_affine,
    domain_centre,
    identity_affine,
    invert_affine,
    matrix_from_params,
    params_from_matrix,
)
from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.ops.warp import compose_maps, warp_image


def _rotation(angle: float, centre, shift, dim: int = 2) -> torch.Tensor:
    """Pull-back matrix: rotation by ``angle`` (first two axes) about ``centre`` + ``shift``."""
    a = torch.eye(dim, dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    a[0, 0], a[0, 1], a[1, 0], a[1, 1] = c, -s, s, c
    centre = torch.as_tensor(centre, dtype=torch.float64)
    b = centre - a @ centre + torch.as_tensor(shift, dtype=torch.float64)
    return torch.cat([a, b[:, None]], dim=1)[None]


def _inside(points: torch.Tensor, shape, spacing) -> torch.Tensor:
    """``(B, D, *S)`` mask (repeated over D) of points inside the grid's domain."""
    ok = torch.ones_like(points[:, :1], dtype=torch.bool)
    for d, (n, h) in enumerate(zip(shape, spacing)):
        ok &= (points[:, d : d + 1] >= 0) & (points[:, d : d + 1] <= (n - 1) * h)
    return ok.expand_as(points)


@pytest.mark.parametrize("dim", [2, 3])
def test_compose_affine_matches_composing_the_maps(dim):
    """Two known affines: the matrix product equals sampling A1 at A2 (``A1 o A2``), and the
    reversed product (the reference code's order) does not."""
    shape = (21, 17) if dim == 2 else (11, 9, 10)
    sp = domain_spacing(shape)
    a1 = _rotation(0.3, [0.5] * dim, [0.05] + [0.0] * (dim - 1), dim)
    a2 = _rotation(-0.2, [0.4] * dim, [0.0] * (dim - 1) + [-0.07], dim)
    a2[:, :, :dim] *= 1.1  # and a scaling
    m1, m2 = affine_to_map(a1, shape, sp), affine_to_map(a2, shape, sp)
    expected = compose_maps(m1, m2, sp)  # (A1 o A2)(x) = A1(A2(x))
    got = affine_to_map(compose_affine(a1, a2), shape, sp)
    inside = _inside(m2, shape, sp)  # where sampling A1 at A2(x) needs no padding
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


def test_invert_affine():
    m = _rotation(0.4, [0.5, 0.5], [0.1, -0.05])
    assert torch.allclose(compose_affine(m, invert_affine(m)), identity_affine(1, 2, m), atol=1e-12)


def test_untrained_affine_net_is_identity_for_any_size():
    net = MultiStepAffineNet(2, features=(4, 8, 8), hidden=8, num_steps=3)
    for shape in ((33, 27), (16, 64)):
        out = net(torch.rand(2, 1, *shape), torch.rand(2, 1, *shape))
        assert torch.equal(out.matrix, identity_affine(2, 2, out.matrix))
        assert len(out.steps) == 3
    out3 = MultiStepAffineNet(3, features=(4, 8), hidden=8)(
        torch.rand(1, 1, 12, 10, 9), torch.rand(1, 1, 12, 10, 9)
    )
    assert out3.matrix.shape == (1, 3, 4)


def _blob(shape, centre, radius=3.0) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return torch.exp(-r2 / (2 * radius**2))[None, None]


def test_com_init_starts_from_the_centre_of_mass_translation():
    """An untrained net with init="com" moves the source's centre of mass onto the target's;
    the learned part is the identity (only it is regularised)."""
    from rdmm_lightning.ops.moments import center_of_mass

    shape = (40, 36)
    spacing = domain_spacing(shape)
    source, target = _blob(shape, (12.0, 22.0)), _blob(shape, (25.0, 15.0))
    net = MultiStepAffineNet(2, features=(4, 8, 8), hidden=8, num_steps=2, init="com")
    out = net(source, target, spacing)
    assert torch.equal(out.learned, identity_affine(1, 2, source))
    expected = torch.tensor([[13.0 * spacing[0], -7.0 * spacing[1]]]) * -1  # c_s - c_t
    torch.testing.assert_close(out.matrix[:, :, 2], expected, atol=1e-4, rtol=0)
    warped = warp_image(source, affine_to_map(out.matrix, shape, spacing), spacing)
    torch.testing.assert_close(
        center_of_mass(warped, spacing), center_of_mass(target, spacing), atol=1e-3, rtol=0
    )
    plain = MultiStepAffineNet(2, features=(4, 8, 8), hidden=8, num_steps=2)
    assert torch.equal(plain(source, target, spacing).matrix, identity_affine(1, 2, source))
    with pytest.raises(ValueError, match="init must be one of"):
        MultiStepAffineNet(2, init="moments")


def test_multi_step_net_composes_pull_backs_in_order(monkeypatch):
    """Steps predicting A1 then A2 give A1 o A2, and step 2 sees the source warped by A1."""
    shape = (24, 20)
    sp = domain_spacing(shape)
    net = MultiStepAffineNet(2, features=(4, 8), hidden=8, num_steps=2).double()
    centre = domain_centre(shape, sp, torch.zeros((), dtype=torch.float64))
    a1 = _rotation(0.25, [0.3, 0.6], [0.04, 0.0])
    a2 = _rotation(-0.1, [0.5, 0.5], [0.0, 0.08])
    planned = [params_from_matrix(a1, centre), params_from_matrix(a2, centre)]
    seen = []

    def fake_step(moving, target):
        seen.append(moving)
        return planned[len(seen) - 1]

    monkeypatch.setattr(net, "step_params", fake_step)
    source = torch.rand(1, 1, *shape, dtype=torch.float64)
    out = net(source, torch.rand_like(source), sp)
    assert torch.allclose(out.matrix, compose_affine(a1, a2), atol=1e-12)
    assert torch.equal(seen[0], source)
    assert torch.allclose(seen[1], warp_image(source, affine_to_map(a1, shape, sp), sp))
    # the final map warps like composing the two step maps
    total = affine_to_map(out.matrix, shape, sp)
    step_maps = [affine_to_map(m, shape, sp) for m in out.steps]
    inside = _inside(step_maps[1], shape, sp)
    assert torch.allclose(total[inside], compose_maps(*step_maps, sp)[inside], atol=1e-10)


def test_affine_to_map_identity():
    shape = (9, 7)
    sp = domain_spacing(shape)
    eye = identity_affine(2, 2, torch.zeros(()))
    assert torch.allclose(
        affine_to_map(eye, shape, sp), identity_map(shape, sp).expand(2, -1, -1, -1)
    )
    with pytest.raises(ValueError, match="D \\+ 1"):
        affine_to_map(torch.zeros(1, 2, 2), shape, sp)
