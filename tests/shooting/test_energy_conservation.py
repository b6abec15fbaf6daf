"""Energy <m, v> along LDDMM and RDMM geodesics (paper: conserved exactly in the continuum).

The conservative central-difference scheme keeps it to round-off plus time-stepping error. The
same measurement applied to deliberately wrong variants (non-conservative EPDiff form, RDMM with
grad h(0), without advected h, without the extra term) must show a drift above the tolerance,
so this test can tell a correct scheme from a wrong one.
"""

from __future__ import annotations

import pytest
import torch

from rdmm_lightning.ops import gaussian_smooth, identity_map, normalize_pre_weights
from rdmm_lightning.ops.finite_differences import divergence, gradient
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import fourier_gaussian_kernels, smooth_pre_weights_adjoint
from rdmm_lightning.shooting import SolverOptions, integrate, momentum_energy
from rdmm_lightning.shooting.lddmm import EPDiffDynamics
from rdmm_lightning.shooting.rdmm import RDMMDynamics
from rdmm_lightning.shooting.terms import (
    advect_map_rhs,
    epdiff_rhs,
    region_specific_velocity,
)

TOL = 1e-4
SIGMAS = (0.03, 0.06, 0.1)
WEIGHTS = (0.2, 0.3, 0.5)
WEIGHT_SIGMA = 0.05
# (shape, maximal displacement in voxels)
CASES = [((48, 48), 8.0), ((32, 32, 32), 6.0)]


def _compact_bump(shape, radius=0.2, centre=0.5):
    """C^2 bump supported within ``radius`` of ``centre`` (a number or one per axis); the
    default lies 3 sigma_max from the border."""
    x = identity_map(shape, dtype=torch.float64)
    c = torch.as_tensor(centre, dtype=torch.float64).reshape(-1, *[1] * len(shape))
    r2 = ((x - c) ** 2).sum(1, keepdim=True) / radius**2
    return (1 - r2).clamp_min(0) ** 3


def _momentum(shape, seed=0, **bump):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, len(shape), *shape, generator=g, dtype=torch.float64)
    return gaussian_smooth(noise, 0.05, domain_spacing(shape)) * _compact_bump(shape, **bump)


def _pre_weights(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(1, len(SIGMAS), *shape, generator=g, dtype=torch.float64)
    raw = gaussian_smooth(raw, 0.1, domain_spacing(shape)).abs()
    return normalize_pre_weights(raw * 5 + 0.1)


class NonConservativeEPDiff(EPDiffDynamics):
    """EPDiff written as -(div(v) m + Dv^T m + Dm v): equal in the continuum only."""

    def forward(self, t, state):
        m, phi = state
        v = self.velocity(m)
        sp = self.spacing
        dv = gradient(v, sp)  # [k, j] = d_j v_k
        dm_ = gradient(m, sp)  # [j, k] = d_k m_j
        rhs = divergence(v, sp) * m + (dv * m.unsqueeze(2)).sum(1) + (dm_ * v.unsqueeze(1)).sum(2)
        return -rhs, advect_map_rhs(phi, v, sp)


class BrokenRDMM(RDMMDynamics):
    """RDMM variants that break the conservation law."""

    def __init__(self, *args, variant: str, h0: torch.Tensor, **kw):
        super().__init__(*args, **kw)
        self.variant = variant
        self.h0 = h0

    def forward(self, t, state):
        m, h, phi = state
        if self.variant == "no_advection":
            h = self.h0
        v, nu = self.velocity(m, h)
        grad_h = gradient(h, self.spacing)
        if self.variant in ("grad_h0", "no_advection"):
            grad_extra = gradient(self.h0, self.spacing)
        else:
            grad_extra = grad_h
        m_dot_nu = (m.unsqueeze(1) * nu).sum(2)
        if self.variant == "plain_smoothing_adjoint":  # G * g instead of S^T g = G * (g / G*1)
            coupling = gaussian_smooth(m_dot_nu, self.weight_sigma, self.spacing)
        else:
            coupling = smooth_pre_weights_adjoint(m_dot_nu, self.weight_sigma, self.spacing)
        dm = epdiff_rhs(m, v, self.spacing)
        if self.variant != "no_extra_term":
            dm = dm + (coupling.unsqueeze(2) * grad_extra).sum(1)
        dh = (
            torch.zeros_like(h)
            if self.variant == "no_advection"
            else -(grad_h * v.unsqueeze(1)).sum(2)
        )
        return dm, dh, advect_map_rhs(phi, v, self.spacing)


def _energies_lddmm(dyn, m0, steps=20):
    shape = m0.shape[2:]
    phi = identity_map(shape, dtype=m0.dtype).clone()
    times = torch.linspace(0, 1, 11, dtype=m0.dtype)
    sol = integrate(dyn, (m0, phi), SolverOptions("rk4", steps), times)
    sp = domain_spacing(shape)
    energies = [momentum_energy(m, dyn.velocity(m), sp) for m in sol[0]]
    return torch.cat(energies), sol[1][-1]


def _energies_rdmm(dyn, m0, h0, steps=20):
    shape = m0.shape[2:]
    phi = identity_map(shape, dtype=m0.dtype).clone()
    times = torch.linspace(0, 1, 11, dtype=m0.dtype)
    sol = integrate(dyn, (m0, h0, phi), SolverOptions("rk4", steps), times)
    sp = domain_spacing(shape)
    out = []
    for m, h in zip(sol[0], sol[1]):
        v, _ = region_specific_velocity(m, dyn.weights(h), dyn.kernels)
        out.append(momentum_energy(m, v, sp))
    return torch.cat(out), sol[2][-1]


def _relative_drift(e):
    return float((e - e[0]).abs().max() / e[0].abs())


def _scaled_momentum(shape, displacement_voxels, run, m0=None):
    m0 = _momentum(shape) if m0 is None else m0
    sp = domain_spacing(shape)
    ident = identity_map(shape, dtype=torch.float64)
    h = torch.tensor(sp, dtype=torch.float64).view(1, -1, *[1] * len(shape))
    for _ in range(2):
        _, phi = run(m0)
        m0 = m0 * displacement_voxels / float(((phi - ident).abs() / h).max())
    return m0


@pytest.mark.parametrize("shape,displacement", CASES)
def test_lddmm_energy_is_conserved_and_a_non_conservative_form_is_not(shape, displacement):
    sp = domain_spacing(shape)
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, weights=WEIGHTS, dtype=torch.float64)
    good = EPDiffDynamics(kern, sp, forward_map=False)
    m0 = _scaled_momentum(shape, displacement, lambda m: _energies_lddmm(good, m))
    # 40 rk4 steps: the drift left is time-stepping error, well inside TOL (7e-5 with 20 steps
    # at 48x48 and 8 voxels)
    energies, _ = _energies_lddmm(good, m0, steps=40)
    drift = _relative_drift(energies)
    print(f"{shape} drift {drift:.2e}")
    assert drift < TOL / 10
    bad, _ = _energies_lddmm(NonConservativeEPDiff(kern, sp, forward_map=False), m0, steps=40)
    assert _relative_drift(bad) > 3 * TOL


@pytest.mark.parametrize("shape,displacement", CASES)
def test_rdmm_energy_is_conserved_and_broken_variants_are_not(shape, displacement):
    sp = domain_spacing(shape)
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=torch.float64)
    good = RDMMDynamics(kern, WEIGHT_SIGMA, sp, forward_map=False)
    h0 = _pre_weights(shape)
    m0 = _scaled_momentum(shape, displacement, lambda m: _energies_rdmm(good, m, h0))
    energies, _ = _energies_rdmm(good, m0, h0)
    drift = _relative_drift(energies)
    print(f"{shape} drift {drift:.2e}")
    assert drift < TOL
    for variant in ("grad_h0", "no_advection", "no_extra_term"):
        dyn = BrokenRDMM(kern, WEIGHT_SIGMA, sp, False, variant=variant, h0=h0)
        bad, _ = _energies_rdmm(dyn, m0, h0)
        assert _relative_drift(bad) > 3 * TOL, variant


@pytest.mark.parametrize("shape", [(48, 48), (32, 32, 32)])
def test_rdmm_energy_needs_the_exact_adjoint_of_the_pre_weight_smoothing(shape):
    """Near a border the normaliser ``G * 1`` of the pre-weight smoothing departs from 1, so the
    plain Gaussian in place of ``S^T`` (the missing ``1 / (G * 1)``) shows up as drift: momentum
    bump about 0.3 from one border, pre-weight smoothing 0.15."""
    sp = domain_spacing(shape)
    weight_sigma = 0.15
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=torch.float64)
    good = RDMMDynamics(kern, weight_sigma, sp, forward_map=False)
    h0 = _pre_weights(shape)
    centre = [0.3] + [0.5] * (len(shape) - 1)
    m0 = _momentum(shape, radius=0.15, centre=centre)
    m0 = _scaled_momentum(shape, 5.0, lambda m: _energies_rdmm(good, m, h0), m0=m0)
    drift = _relative_drift(_energies_rdmm(good, m0, h0, steps=40)[0])
    plain = BrokenRDMM(kern, weight_sigma, sp, False, variant="plain_smoothing_adjoint", h0=h0)
    bad = _relative_drift(_energies_rdmm(plain, m0, h0, steps=40)[0])
    print(f"{shape}: exact adjoint {drift:.2e}, plain Gaussian {bad:.2e}")
    assert drift < 1e-6
    assert bad > 100 * drift and bad > 1e-5
