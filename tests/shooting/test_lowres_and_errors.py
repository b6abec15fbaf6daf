"""Low-resolution shooting with composition, and bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch

from rdmm_lightning.ops import compose_maps, identity_map
from rdmm_lightning.ops.grid import domain_spacing, low_res_shape
from rdmm_lightning.shooting import (
    LDDMMShooting,
    MultiGaussianShooting,
    RDMMShooting,
    SolverOptions,
    VSVFShooting,
    make_shooting_unit,
    shoot_lddmm,
    shoot_rdmm,
    shoot_vsvf,
)
from tests.helpers import scale_to_displacement, smooth_momentum, smooth_pre_weights


def _rotation_map(shape, angle, dtype=torch.float64):
    """Affine pull-back about the domain centre: x -> R (x - c) + c."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=dtype)
    x = identity_map(shape, dtype=dtype) - 0.5
    return torch.einsum("ij,bj...->bi...", rot, x) + 0.5, torch.einsum(
        "ji,bj...->bi...", rot, x
    ) + 0.5


@pytest.mark.parametrize("shape", [(20, 24), (12, 14, 16)])
def test_zero_momentum_at_low_resolution_gives_identity_at_full_resolution(shape):
    low = low_res_shape(shape, 0.5)
    m0 = torch.zeros(1, len(shape), *low)
    res = LDDMMShooting((0.1,))(m0, full_shape=shape)
    assert res.phi_inv.shape == (1, len(shape), *shape)
    torch.testing.assert_close(res.phi_inv, identity_map(shape).expand_as(res.phi_inv))


def test_initial_affine_map_is_composed_both_ways():
    shape = (24, 24)
    affine, affine_inv = _rotation_map(shape, 0.2)
    unit = VSVFShooting((0.1, 0.2), forward_map=True, solver=SolverOptions("rk4", 10))
    m0 = smooth_momentum((12, 12), batch=1, smooth=0.1, width=0.15)
    m0 = scale_to_displacement(lambda m: unit(m, full_shape=shape), m0, 2.0)
    res = unit(m0, initial_map=affine, initial_forward=affine_inv)
    psi = unit(m0, full_shape=shape)
    torch.testing.assert_close(res.phi_inv, compose_maps(affine, psi.phi_inv))
    # forward o pull-back is the identity away from the border
    comp = compose_maps(res.phi, res.phi_inv)
    err = (comp - identity_map(shape, dtype=torch.float64))[..., 4:-4, 4:-4].abs().max()
    assert err * 23 < 0.5


def test_bad_inputs_raise_clear_errors():
    m0 = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"m0 must have shape \(B, D, \*S\)"):
        shoot_lddmm(torch.zeros(1, 3, 8, 8), (0.1,), (1.0,))
    with pytest.raises(ValueError, match="non-finite"):
        shoot_lddmm(torch.full((1, 2, 8, 8), float("nan")), (0.1,), (1.0,))
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 8, 8\)"):
        shoot_rdmm(m0, torch.ones(1, 3, 8, 8), (0.1, 0.2), 0.05)
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 8, 8\)"):
        shoot_rdmm(m0, torch.ones(1, 2, 8, 9), (0.1, 0.2), 0.05)
    with pytest.raises(ValueError, match="solver method"):
        SolverOptions("rk45")
    with pytest.raises(ValueError, match="num_steps"):
        SolverOptions("rk4", 0)
    with pytest.raises(ValueError, match="model must be one of"):
        make_shooting_unit("demons", sigmas=(0.1,))
    with pytest.raises(ValueError, match="pre-weights"):
        RDMMShooting((0.1,))(m0)
    with pytest.raises(ValueError, match="h_mode"):
        RDMMShooting((0.1,), h_mode="spline")
    with pytest.raises(ValueError, match="sigmas"):
        LDDMMShooting(())
    with pytest.raises(ValueError, match="weights"):
        LDDMMShooting((0.1, 0.2), (1.0,))


def test_interpolated_pre_weights_close_to_pde_advection():
    shape = (24, 24)
    h0 = smooth_pre_weights(shape, batch=1)
    m0 = smooth_momentum(shape, batch=1, smooth=0.08, width=0.12)
    m0 = scale_to_displacement(lambda m: shoot_rdmm(m, h0, (0.05, 0.1, 0.15), 0.05), m0, 3.0)
    pde = shoot_rdmm(m0, h0, (0.05, 0.1, 0.15), 0.05)
    interp = shoot_rdmm(m0, h0, (0.05, 0.1, 0.15), 0.05, h_mode="interpolate")
    assert (pde.phi_inv - interp.phi_inv).abs().max() < 0.1 * (
        pde.phi_inv - identity_map(shape, dtype=torch.float64)
    ).abs().max()
    # two discretisations of the same transport: close on average, sharp ridges differ most
    diff = (pde.pre_weights - interp.pre_weights).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.25


@pytest.mark.parametrize("model, fn", [("svf", shoot_vsvf), ("lddmm", shoot_lddmm)])
def test_multi_gaussian_units_call_their_shooting_function(model, fn):
    """vSVF and LDDMM units are one class that differs only in the function it calls; each unit
    matches its function exactly and not the other's (negative control)."""
    m0 = smooth_momentum((16, 18), batch=1) * 0.3
    sigmas, weights, solver = (0.08, 0.15), (0.4, 0.6), SolverOptions("rk4", 4)
    unit = make_shooting_unit(model, sigmas=sigmas, weights=weights, solver=solver)
    assert isinstance(unit, MultiGaussianShooting) and unit.model == model
    got = unit(m0).phi_inv
    sp = domain_spacing((16, 18))
    assert torch.equal(got, fn(m0, sigmas, weights, sp, solver).phi_inv)
    other = shoot_lddmm if fn is shoot_vsvf else shoot_vsvf
    assert float((got - other(m0, sigmas, weights, sp, solver).phi_inv).abs().max()) > 1e-6
