"""Gradients through shooting: finite-difference checks and adjoint vs. direct."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from rdmm_lightning.shooting import SolverOptions, shoot_lddmm, shoot_rdmm, shoot_vsvf
from tests.helpers import scale_to_displacement, smooth_momentum, smooth_pre_weights

SHAPE = (10, 10)
SIGMAS = (0.1, 0.2)


def test_gradcheck_rdmm_wrt_momentum_and_pre_weights():
    solver = SolverOptions("rk4", 4)
    m0 = smooth_momentum(SHAPE, batch=1, smooth=0.1, width=0.2)
    h0 = smooth_pre_weights(SHAPE, n=2, batch=1)
    m0 = scale_to_displacement(lambda m: shoot_rdmm(m, h0, SIGMAS, 0.1, solver=solver), m0, 2.5)
    m0.requires_grad_(True)
    h0.requires_grad_(True)
    probe = torch.randn(1, 2, *SHAPE, dtype=torch.float64)

    def f(m, h):
        res = shoot_rdmm(m, h, SIGMAS, 0.1, solver=solver)
        return (res.phi_inv * probe).sum() + res.momentum.pow(2).sum()

    assert gradcheck(f, (m0, h0), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_lddmm_and_vsvf_wrt_momentum():
    solver = SolverOptions("rk4", 4)
    m0 = smooth_momentum(SHAPE, batch=1, smooth=0.1, width=0.2)
    m0 = scale_to_displacement(lambda m: shoot_lddmm(m, SIGMAS, (0.5, 0.5), solver=solver), m0, 2.5)
    m0.requires_grad_(True)
    for shoot in (shoot_lddmm, shoot_vsvf):
        assert gradcheck(
            lambda m, s=shoot: s(m, SIGMAS, (0.5, 0.5), solver=solver).phi_inv.sum(),
            (m0,),
            eps=1e-6,
            atol=1e-6,
            rtol=1e-4,
        )


def test_adjoint_gradients_match_direct_gradients():
    m0 = smooth_momentum(SHAPE, batch=1, smooth=0.1, width=0.2)
    h0 = smooth_pre_weights(SHAPE, n=2, batch=1)
    m0 = scale_to_displacement(lambda m: shoot_rdmm(m, h0, SIGMAS, 0.1), m0, 2.5)
    probe = torch.randn(1, 2, *SHAPE, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        m = m0.clone().requires_grad_(True)
        h = h0.clone().requires_grad_(True)
        solver = SolverOptions("rk4", 32, adjoint=adjoint)
        res = shoot_rdmm(m, h, SIGMAS, 0.1, solver=solver)
        (res.phi_inv * probe).sum().backward()
        grads.append((m.grad, h.grad))
    for direct, adj in zip(*grads):
        assert (direct - adj).abs().max() < 1e-4 * direct.abs().max()


@pytest.mark.parametrize("h_mode", ["pde", "interpolate"])
def test_gradcheck_rdmm_3d(h_mode):
    shape, sigmas = (6, 7, 6), (0.15, 0.3)
    solver = SolverOptions("rk4", 3)
    m0 = smooth_momentum(shape, batch=1, smooth=0.15, width=0.25)
    h0 = smooth_pre_weights(shape, n=2, batch=1)

    def shoot(m, h):
        return shoot_rdmm(m, h, sigmas, 0.15, solver=solver, h_mode=h_mode)

    m0 = scale_to_displacement(lambda m: shoot(m, h0), m0, 1.5)
    m0.requires_grad_(True)
    h0.requires_grad_(True)
    probe = torch.randn(
        1, 3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )

    def f(m, h):
        res = shoot(m, h)
        return (res.phi_inv * probe).sum() + res.momentum.pow(2).sum() + res.pre_weights.sum()

    # fast mode: the full Jacobian projected on random vectors (a few shoots, not one per input)
    assert gradcheck(f, (m0, h0), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
