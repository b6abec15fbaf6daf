"""The multi-step affine net: identity start, centre-of-mass start, composition order of its
steps (the affine algebra itself: tests/ops/test_affine.py)."""

import pytest
import torch

from rdmm_lightning.nets import MultiStepAffineNet
from rdmm_lightning.ops.affine import (
    affine_to_map,
    compose_affine,
    domain_centre,
    identity_affine,
    params_from_matrix,
)
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.warp import compose_maps, warp_image
from tests.helpers import inside_domain, rotation_affine


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
    a1 = rotation_affine(0.25, [0.3, 0.6], [0.04, 0.0])
    a2 = rotation_affine(-0.1, [0.5, 0.5], [0.0, 0.08])
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
    inside = inside_domain(step_maps[1], shape, sp)
    assert torch.allclose(total[inside], compose_maps(*step_maps, sp)[inside], atol=1e-10)
