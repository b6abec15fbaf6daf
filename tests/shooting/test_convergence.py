"""Convergence with the number of time steps (float64) and forward/inverse consistency."""

from __future__ import annotations

import pytest
import torch

from rdmm_lightning.ops import compose_maps, identity_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.shooting import LDDMMShooting, RDMMShooting, SolverOptions, VSVFShooting
from tests.helpers import (
    max_displacement_voxels,
    scale_to_displacement,
    smooth_momentum,
    smooth_pre_weights,
)

SIGMAS = (0.06, 0.1, 0.15)
WEIGHTS = (0.2, 0.3, 0.5)


def _unit(model, steps, sigmas=SIGMAS):
    solver = SolverOptions("rk4", steps)
    if model == "svf":
        return VSVFShooting(sigmas, WEIGHTS, solver, forward_map=True)
    if model == "lddmm":
        return LDDMMShooting(sigmas, WEIGHTS, solver, forward_map=True)
    return RDMMShooting(sigmas, 0.05, solver, forward_map=True)


def _voxels(x, shape):
    h = torch.tensor(domain_spacing(shape), dtype=x.dtype).view(1, -1, *[1] * len(shape))
    return x / h


@pytest.mark.parametrize("model", ["svf", "lddmm", "rdmm"])
def test_rk4_converges_and_forward_map_matches_reference(model):
    shape = (32, 32)
    m0 = smooth_momentum(shape, batch=2, smooth=0.08, width=0.12)
    h0 = smooth_pre_weights(shape, batch=2)
    m0 = scale_to_displacement(lambda m: _unit(model, 16)(m, h0), m0, 5.0)
    runs = {n: _unit(model, n)(m0, h0) for n in (8, 16, 256)}
    ref = runs[256]
    err8 = (runs[8].phi_inv - ref.phi_inv).abs().max()
    err16 = (runs[16].phi_inv - ref.phi_inv).abs().max()
    assert err8 / err16 >= 8.0, f"{model}: ratio {float(err8 / err16):.2f}"
    fwd = _voxels(runs[16].phi - ref.phi, shape).abs().max()
    assert fwd < 1e-3, f"{model}: forward map error {float(fwd):.2e} voxel"


INVERSE_CASES = [
    ("svf", (48, 48), SIGMAS),
    ("lddmm", (48, 48), SIGMAS),
    ("rdmm", (48, 48), SIGMAS),
    pytest.param("lddmm", (32, 32, 32), (0.08, 0.12, 0.2), marks=pytest.mark.slow),
    pytest.param("rdmm", (32, 32, 32), (0.08, 0.12, 0.2), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("model,shape,sigmas", INVERSE_CASES)
def test_forward_and_inverse_maps_are_inverse(model, shape, sigmas):
    """float32, smooth moderate momenta, 5 voxels displacement: both compositions are the
    identity to 0.5 voxel inside (5 voxels from the border) and 1 voxel everywhere."""
    dtype = torch.float32
    m0 = smooth_momentum(shape, batch=2, smooth=0.08, width=0.12, dtype=dtype)
    h0 = smooth_pre_weights(shape, batch=2, dtype=dtype)
    unit = _unit(model, 20, sigmas=sigmas)
    m0 = scale_to_displacement(lambda m: unit(m, h0), m0, 5.0)
    res = unit(m0, h0)
    assert 4.0 < max_displacement_voxels(res.phi_inv) <= 5.5
    ident = identity_map(shape, dtype=dtype)
    inner = (slice(None), slice(None)) + (slice(5, -5),) * len(shape)
    for comp in (compose_maps(res.phi_inv, res.phi), compose_maps(res.phi, res.phi_inv)):
        err = _voxels(comp - ident, shape).abs()
        assert err[inner].max() < 0.5
        assert err.max() < 1.0
