import math

import pytest
import torch

from rdmm_lightning.losses import (
    affine_symmetry_loss,
    map_symmetry_loss,
    omt_penalty,
    shooting_energy,
    weight_range_penalty,
)
from rdmm_lightning.ops.energy import momentum_energy
from rdmm_lightning.ops.grid import domain_spacing, identity_map


def translation(shape, shift, batch=2, dtype=torch.float64):
    """Pull-back map ``x + shift`` (domain units), ``(B, D, *S)``."""
    t = torch.tensor(shift, dtype=dtype).view(1, -1, *[1] * len(shape))
    return (identity_map(shape, dtype=dtype) + t).expand(batch, -1, *shape)


# --- shooting energy ----------------------------------------------------------------------------


def test_shooting_energy_by_hand():
    m0 = torch.full((2, 2, 4, 5), 2.0, dtype=torch.float64)
    v0 = torch.full((2, 2, 4, 5), 3.0, dtype=torch.float64)
    v0[1] = 1.0
    sp = (0.5, 0.25)
    per_item = shooting_energy(m0, v0, sp, reduction="none")
    vol = 0.5 * 0.25
    torch.testing.assert_close(
        per_item, torch.tensor([0.5 * 6 * 40 * vol, 0.5 * 2 * 40 * vol]).double()
    )
    torch.testing.assert_close(shooting_energy(m0, v0, sp), per_item.mean())
    # default spacing is the parity spacing of the grid
    torch.testing.assert_close(
        shooting_energy(m0, v0, reduction="none"),
        0.5 * momentum_energy(m0, v0, domain_spacing((4, 5))),
    )


def test_shooting_energy_errors():
    m0 = torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match="v0 must have the shape of m0"):
        shooting_energy(m0, torch.rand(1, 2, 4, 5))
    with pytest.raises(ValueError, match="m0 must have shape"):
        shooting_energy(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="spacing"):
        shooting_energy(m0, m0, (0.1,))


# --- OMT ----------------------------------------------------------------------------------------


def test_omt_zero_on_largest_sigma_and_for_one_gaussian():
    w = torch.zeros(2, 3, 8, 8)
    w[:, 2] = 1.0
    assert float(omt_penalty(w, [0.05, 0.1, 0.2])) == 0.0
    assert float(omt_penalty(torch.rand(2, 1, 8, 8), [0.1])) == 0.0
    assert omt_penalty(torch.rand(2, 1, 8, 8), [0.1], reduction="none").shape == (2,)
    assert float(omt_penalty(torch.rand(2, 2, 8, 8), [0.1, 0.1])) == 0.0


def test_omt_hand_value_two_sigmas():
    w = torch.empty(1, 2, 4, 4, dtype=torch.float64)
    w[:, 0], w[:, 1] = 0.6, 0.8
    sp = (0.5, 0.25)
    # coefficient 1 for the smaller sigma, 0 for the larger: 0.6^2 * 16 voxels * volume 0.125
    expected = 0.36 * 16 * 0.125
    for power in (1.0, 2.0):
        assert float(omt_penalty(w, [0.1, 0.2], power, sp)) == pytest.approx(expected)
    # the order of the sigmas is free as long as it matches the channels of w
    assert float(omt_penalty(w.flip(1), [0.2, 0.1], 1.0, sp)) == pytest.approx(expected)


def test_omt_hand_value_three_sigmas():
    w = torch.ones(2, 3, 5, 5, dtype=torch.float64)
    w[1] *= 2.0
    sigmas = torch.tensor([0.05, 0.1, 0.2])
    # coefficients |log(0.2/s)|^p / log(4)^p = 1, 0.5^p, 0; default parity spacing 1/16
    for power in (1.0, 2.0):
        unit = (1 + 0.5**power) * 25 / 16
        got = omt_penalty(w, sigmas, power, reduction="none")
        torch.testing.assert_close(got, torch.tensor([unit, 4 * unit], dtype=torch.float64))
    assert math.isfinite(float(omt_penalty(w.float(), sigmas, 0.5)))


def test_omt_errors():
    with pytest.raises(ValueError, match="sigmas must have N = 3"):
        omt_penalty(torch.rand(1, 3, 4, 4), [0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        omt_penalty(torch.rand(1, 2, 4, 4), [0.0, 0.2])
    with pytest.raises(ValueError, match="power"):
        omt_penalty(torch.rand(1, 2, 4, 4), [0.1, 0.2], power=0.0)
    with pytest.raises(ValueError, match=r"w must have shape \(B, N, \*S\)"):
        omt_penalty(torch.rand(3, 4), [0.1, 0.2, 0.3])


def test_omt_gradient():
    w = torch.rand(2, 3, 8, 8, requires_grad=True)
    omt_penalty(w, [0.05, 0.1, 0.2]).backward()
    assert torch.isfinite(w.grad).all() and float(w.grad[:, 2].abs().max()) == 0.0


# --- affine symmetry ----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 3])
def test_affine_symmetry_zero_for_inverse_pair(dim):
    g = torch.Generator().manual_seed(0)
    A = torch.eye(dim, dtype=torch.float64) + 0.2 * torch.randn(3, dim, dim, generator=g).double()
    b = torch.randn(3, dim, generator=g).double()
    A_inv = torch.linalg.inv(A)
    b_inv = -(A_inv @ b.unsqueeze(-1)).squeeze(-1)
    assert float(affine_symmetry_loss(A, b, A_inv, b_inv)) < 1e-20
    assert float(affine_symmetry_loss(A_inv, b_inv, A, b)) < 1e-20


def test_affine_symmetry_hand_value():
    A_st = 2 * torch.eye(3).expand(2, 3, 3)
    A_ts = torch.eye(3).expand(2, 3, 3)
    b_st = torch.zeros(2, 3)
    b_ts = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    # |2I - I|_F^2 = 3, |2 b_ts|^2 = 4 or 0
    got = affine_symmetry_loss(A_st, b_st, A_ts, b_ts, reduction="none")
    torch.testing.assert_close(got, torch.tensor([7.0, 3.0]))


def test_affine_symmetry_errors():
    A, b = torch.eye(2).expand(1, 2, 2), torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"A_st must have shape \(B, D, D\)"):
        affine_symmetry_loss(torch.rand(1, 2, 3), b, A, b)
    with pytest.raises(ValueError, match=r"b_ts must have shape \(1, 2\)"):
        affine_symmetry_loss(A, b, A, torch.zeros(1, 3))


# --- map symmetry -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_map_symmetry_zero_for_translation_and_inverse(shape):
    shift = [0.07, -0.11, 0.05][: len(shape)]
    phi_st = translation(shape, shift)
    phi_ts = translation(shape, [-s for s in shift])
    assert float(map_symmetry_loss(phi_st, phi_ts)) < 1e-10
    # hand value when both maps translate the same way: |2 t|^2
    got = map_symmetry_loss(phi_st, phi_st, reduction="none")
    expected = 4 * sum(s * s for s in shift)
    torch.testing.assert_close(got, torch.full((2,), expected, dtype=torch.float64))


def test_map_symmetry_other_spacing_and_gradient():
    shape, sp = (12, 10), (0.05, 0.08)
    ident = identity_map(shape, sp, dtype=torch.float64).expand(1, -1, *shape)
    bump = torch.zeros(1, 2, *shape, dtype=torch.float64)
    bump[:, :, 4:8, 3:7] = 0.01
    phi = (ident + bump).requires_grad_()
    loss = map_symmetry_loss(phi, ident, sp)
    assert float(loss.detach()) == pytest.approx(float((bump**2).sum(1).mean()))
    loss.backward()
    assert torch.isfinite(phi.grad).all()


def test_map_symmetry_errors():
    phi = identity_map((8, 8)).expand(2, -1, 8, 8)
    with pytest.raises(ValueError, match="phi_ts_inv must have spatial shape"):
        map_symmetry_loss(phi, identity_map((8, 9)).expand(2, -1, 8, 9))
    with pytest.raises(ValueError, match="phi_st_inv must have shape"):
        map_symmetry_loss(torch.rand(2, 3, 8, 8), phi)
    with pytest.raises(ValueError, match="phi_ts_inv must have the shape of phi_st_inv"):
        map_symmetry_loss(phi, phi[:1])


def test_weight_range_zero_at_prior_and_hand_value():
    prior = (0.1, 0.3, 0.3, 0.3)
    shape = (5, 6)
    at_prior = torch.tensor(prior, dtype=torch.float64).sqrt().view(1, 4, 1, 1).expand(2, 4, *shape)
    assert float(weight_range_penalty(at_prior, prior).abs().max()) == 0.0
    # one voxel moved to (1, 0, 0, 0): sum_i (w_i - sqrt(g_i))^2 times the voxel volume
    w = at_prior.clone()
    w[0, :, 2, 3] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    expected = ((1 - 0.1**0.5) ** 2 + 3 * 0.3) * (1 / 4) * (1 / 5)
    got = weight_range_penalty(w, prior, reduction="none")
    assert torch.allclose(got, torch.tensor([expected, 0.0], dtype=torch.float64))
    # the prior is normalised to sum 1
    assert torch.allclose(weight_range_penalty(w, [1, 3, 3, 3]), weight_range_penalty(w, prior))


def test_weight_range_errors_and_gradient():
    w = torch.rand(1, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="prior_h2"):
        weight_range_penalty(w, (0.5, 0.5))
    with pytest.raises(ValueError, match="prior_h2"):
        weight_range_penalty(w, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="w must have shape"):
        weight_range_penalty(w[0], (1, 1, 1))
    assert torch.autograd.gradcheck(lambda x: weight_range_penalty(x, (0.2, 0.3, 0.5)), (w,))
