"""Energy <m, v> with momentum that reaches the image border.

Real images touch their border, so the momentum does too. The momentum terms of EPDiff use a
summation-by-parts pair of differences (zero extension, ``terms.MOMENTUM_BC``); the discrete
energy is then conserved up to time-stepping error, which falls with the number of rk4 steps.
The negative control is the first scheme (zero-Neumann differences for the momentum terms): its
drift is spatial, orders of magnitude above the tolerance and the same for 20 and 40 steps.
"""

from __future__ import annotations

import pytest
import torch

from rdmm_lightning.ops import gaussian_smooth, identity_map, normalize_pre_weights
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import fourier_gaussian_kernels
from rdmm_lightning.shooting import SolverOptions, integrate, momentum_energy, terms
from rdmm_lightning.shooting.lddmm import EPDiffDynamics
from rdmm_lightning.shooting.rdmm import RDMMDynamics
from rdmm_lightning.shooting.terms import region_specific_velocity

SIGMAS = (0.03, 0.06, 0.1)
WEIGHTS = (0.2, 0.3, 0.5)
WEIGHT_SIGMA = 0.05
TOL = 1e-6
SHAPES = [(40, 40), (20, 20, 20)]
DISPLACEMENT_VOXELS = 5.0


def _momentum_to_the_border(shape, margin=2, seed=0):
    """Smooth random momentum, non-zero up to ``margin`` voxels from every border."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, len(shape), *shape, generator=g, dtype=torch.float64)
    m = gaussian_smooth(noise, 0.05, domain_spacing(shape))
    mask = torch.zeros(shape, dtype=torch.float64)
    mask[tuple(slice(margin, n - margin) for n in shape)] = 1.0
    return m * mask


def _varying_pre_weights(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(1, len(SIGMAS), *shape, generator=g, dtype=torch.float64)
    raw = gaussian_smooth(raw, 0.1, domain_spacing(shape)).abs()
    return normalize_pre_weights(raw * 2 + 0.5)


def _dynamics(model, shape):
    sp = domain_spacing(shape)
    if model == "lddmm":
        kern = fourier_gaussian_kernels(shape, SIGMAS, sp, weights=WEIGHTS, dtype=torch.float64)
        return EPDiffDynamics(kern, sp, forward_map=False)
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=torch.float64)
    return RDMMDynamics(kern, WEIGHT_SIGMA, sp, forward_map=False)


def _shoot(dyn, m0, h0, steps):
    """Relative energy drift max_t |E(t) - E(0)| / E(0) over 11 times, and the final map."""
    shape = m0.shape[2:]
    sp = domain_spacing(shape)
    phi = identity_map(shape, dtype=m0.dtype).clone()
    times = torch.linspace(0, 1, 11, dtype=m0.dtype)
    solver = SolverOptions("rk4", steps)
    if isinstance(dyn, EPDiffDynamics):
        sol = integrate(dyn, (m0, phi), solver, times)
        energies = [momentum_energy(m, dyn.velocity(m), sp) for m in sol[0]]
    else:
        sol = integrate(dyn, (m0, h0, phi), solver, times)
        energies = [
            momentum_energy(m, region_specific_velocity(m, dyn.weights(h), dyn.kernels)[0], sp)
            for m, h in zip(sol[0], sol[1])
        ]
    e = torch.cat(energies)
    return float((e - e[0]).abs().max() / e[0].abs()), sol[-1][-1]


def _max_displacement_voxels(phi_inv):
    shape = phi_inv.shape[2:]
    ident = identity_map(shape, dtype=phi_inv.dtype)
    h = torch.tensor(domain_spacing(shape), dtype=phi_inv.dtype).view(1, -1, *[1] * len(shape))
    return float(((phi_inv - ident).abs() / h).max())


def _drifts(model, shape):
    dyn = _dynamics(model, shape)
    m0, h0 = _momentum_to_the_border(shape), _varying_pre_weights(shape)
    for _ in range(2):  # the displacement is not linear in the momentum: scale twice
        _, phi = _shoot(dyn, m0, h0, 10)
        m0 = m0 * DISPLACEMENT_VOXELS / _max_displacement_voxels(phi)
    (d20, _), (d40, phi40) = _shoot(dyn, m0, h0, 20), _shoot(dyn, m0, h0, 40)
    return d20, d40, _max_displacement_voxels(phi40)


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
@pytest.mark.parametrize("shape", SHAPES)
def test_energy_is_conserved_with_momentum_up_to_the_border(model, shape):
    d20, d40, disp = _drifts(model, shape)
    print(f"{model} {shape}: drift 20 steps {d20:.2e}, 40 steps {d40:.2e}, {disp:.1f} voxels")
    assert disp > 3.0  # a real deformation, not a near-identity
    assert d40 <= TOL
    assert d20 / d40 >= 8.0  # what is left is time-stepping error


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_neumann_momentum_differences_drift_at_the_border(model, shape, monkeypatch):
    """Negative control: the first scheme fails the test above, whatever the number of steps."""
    monkeypatch.setattr(terms, "MOMENTUM_BC", "neumann")
    d20, d40, _ = _drifts(model, shape)
    assert d40 > 100 * TOL
    assert d20 / d40 < 2.0
