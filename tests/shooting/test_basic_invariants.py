"""Identity, translation and RDMM == LDDMM with constant pre-weights."""

from __future__ import annotations

import pytest
import torch

from rdmm_lightning.ops import identity_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.shooting import (
    LDDMMShooting,
    RDMMShooting,
    SolverOptions,
    VSVFShooting,
    integrate_velocity,
    shoot_lddmm,
    shoot_rdmm,
)
from tests.helpers import max_displacement_voxels, scale_to_displacement, smooth_momentum

SHAPES = [(16, 18), (12, 13, 14)]
DTYPES = [torch.float32, torch.float64]
SIGMAS = (0.05, 0.1, 0.2)
WEIGHTS = (0.2, 0.3, 0.5)


def _units():
    return [
        VSVFShooting(SIGMAS, WEIGHTS, forward_map=True),
        LDDMMShooting(SIGMAS, WEIGHTS, forward_map=True),
        RDMMShooting(SIGMAS, 0.05, forward_map=True),
    ]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_momentum_gives_the_identity_exactly(shape, dtype):
    m0 = torch.zeros(2, len(shape), *shape, dtype=dtype)
    h0 = torch.full((2, 3, *shape), 3**-0.5, dtype=dtype)
    ident = identity_map(shape, dtype=dtype).expand(2, -1, *shape)
    for unit in _units():
        res = unit(m0, h0)
        assert torch.equal(res.phi_inv, ident), unit.model
        assert torch.equal(res.phi, ident), unit.model


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint", "dopri5"])
def test_constant_velocity_gives_an_exact_translation(shape, dtype, method):
    sp = domain_spacing(shape)
    shift = torch.tensor([1.5 * h for h in sp], dtype=dtype).view(1, -1, *[1] * len(shape))
    v = shift.expand(2, -1, *shape).clone()
    v[1] *= -0.5
    phi_inv, phi, _ = integrate_velocity(
        v, sp, SolverOptions(method, num_steps=5), forward_map=True
    )
    ident = identity_map(shape, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(phi_inv, ident - v, atol=tol, rtol=0)
    torch.testing.assert_close(phi, ident + v, atol=tol, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_rdmm_with_constant_pre_weights_equals_lddmm(shape):
    dtype = torch.float64
    h2 = torch.tensor(WEIGHTS, dtype=dtype)  # h_i^2, sums to 1
    h0 = h2.sqrt().view(1, -1, *[1] * len(shape)).expand(2, -1, *shape).clone()
    m0 = smooth_momentum(shape, batch=2, smooth=0.1, width=0.15)
    solver = SolverOptions("rk4", 10)
    m0 = scale_to_displacement(lambda m: shoot_lddmm(m, SIGMAS, WEIGHTS, solver=solver), m0, 4.0)
    lddmm = shoot_lddmm(m0, SIGMAS, WEIGHTS, solver=solver, forward_map=True)
    rdmm = shoot_rdmm(m0, h0, SIGMAS, 0.07, solver=solver, forward_map=True)
    assert max_displacement_voxels(lddmm.phi_inv) > 3.0
    assert (rdmm.phi_inv - lddmm.phi_inv).abs().max() < 1e-10
    assert (rdmm.phi - lddmm.phi).abs().max() < 1e-10
    assert (rdmm.momentum - lddmm.momentum).abs().max() < 1e-10 * lddmm.momentum.abs().max()
    torch.testing.assert_close(rdmm.pre_weights, h0)


def test_shooting_moves_where_the_momentum_is():
    shape = (24, 24)
    m0 = torch.zeros(1, 2, *shape, dtype=torch.float64)
    m0[0, 0, 10:14, 10:14] = 0.05
    res = shoot_lddmm(m0, (0.05,), (1.0,))
    disp = (res.phi_inv - identity_map(shape, dtype=torch.float64)).abs()
    # a positive momentum along axis 0 pushes target points along -axis 0 in the pull-back
    assert (res.phi_inv - identity_map(shape, dtype=torch.float64))[0, 0, 12, 12] < 0
    assert disp[0, 0, 12, 12] > 10 * disp[0, 0, 1, 1]
