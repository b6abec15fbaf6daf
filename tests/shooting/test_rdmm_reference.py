"""RDMM with spatially varying pre-weights against an independent evaluation.

With constant pre-weights RDMM reduces to LDDMM, but the extra term, the adjoint ``S^T`` of the
pre-weight smoothing and the advection of ``h`` then all vanish (``grad h = 0``). Here the
pre-weights vary only inside a region where the momentum is zero: ``S^T`` spreads ``m . nu_i``
into that region, so the extra term and the advection of ``h`` are non-zero there.

The reference is written from the equations in models.md with other primitives: Gaussians as
dense Toeplitz matrices (a direct linear convolution with zero outside the grid), finite
differences by slicing, and the Runge-Kutta 3/8 rule (torchdiffeq's fixed-step "rk4") by hand.
"""

from __future__ import annotations

import math

import torch

from rdmm_lightning.ops import identity_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import TRUNCATE, fourier_gaussian_kernels
from rdmm_lightning.shooting import SolverOptions, integrate, shoot_rdmm
from rdmm_lightning.shooting.rdmm import RDMMDynamics

SHAPE = (26, 24)
SIGMAS = (0.04, 0.08, 0.12)
WEIGHT_SIGMA = 0.15
DTYPE = torch.float64


# ----------------------------------------------------------------------------- reference
def _toeplitz_gaussian(n: int, sigma_vox: float) -> torch.Tensor:
    """(n, n) matrix of the 1D linear convolution with the truncated, sum-1 Gaussian."""
    r_norm = math.ceil(TRUNCATE * sigma_vox)
    offsets = torch.arange(-r_norm, r_norm + 1, dtype=DTYPE)
    g = torch.exp(-0.5 * (offsets / sigma_vox) ** 2)
    g = g / g.sum()
    r = min(n - 1, r_norm)
    i = torch.arange(n)
    diff = i.view(-1, 1) - i.view(1, -1)
    mat = torch.zeros(n, n, dtype=DTYPE)
    inside = diff.abs() <= r
    mat[inside] = g[(diff[inside] + r_norm)]
    return mat


def _convolve(f: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian of std ``sigma`` (domain units) on the last two axes of ``f``."""
    (n0, n1), (h0, h1) = SHAPE, domain_spacing(SHAPE)
    t0, t1 = _toeplitz_gaussian(n0, sigma / h0), _toeplitz_gaussian(n1, sigma / h1)
    return torch.einsum("ia,jb,...ab->...ij", t0, t1, f)


def _diff(f: torch.Tensor, axis: int, bc: str) -> torch.Tensor:
    """Central difference along spatial ``axis`` (0 or 1) of ``f: (..., X, Y)``."""
    h = domain_spacing(SHAPE)[axis]
    f = f.movedim(f.dim() - 2 + axis, -1)
    out = torch.zeros_like(f)
    out[..., 1:-1] = (f[..., 2:] - f[..., :-2]) / (2 * h)
    if bc == "zero":  # values outside the grid are 0
        out[..., 0] = f[..., 1] / (2 * h)
        out[..., -1] = -f[..., -2] / (2 * h)
    elif bc == "linear":  # one-sided at the ends
        out[..., 0] = (f[..., 1] - f[..., 0]) / h
        out[..., -1] = (f[..., -1] - f[..., -2]) / h
    return out.movedim(-1, f.dim() - 2 + axis)


def _reference_rhs(m, h, phi, variant: str | None = None):
    """RDMM right-hand side (models.md), state ``(m, h, phi_inv)``. ``variant`` builds the
    known wrong ones: ``"no_extra_term"``, ``"plain_adjoint"`` (``G *`` in place of ``S^T``),
    ``"frozen_h"`` (no advection of the pre-weights)."""
    ones = torch.ones(SHAPE, dtype=DTYPE)
    norm = _convolve(ones, WEIGHT_SIGMA)
    w = _convolve(h, WEIGHT_SIGMA) / norm
    nu = torch.stack([_convolve(w[:, i : i + 1] * m, s) for i, s in enumerate(SIGMAS)], dim=1)
    v = (w.unsqueeze(2) * nu).sum(1)
    m_dot_nu = (m.unsqueeze(1) * nu).sum(2)
    if variant == "plain_adjoint":
        coupling = _convolve(m_dot_nu, WEIGHT_SIGMA)
    else:
        coupling = _convolve(m_dot_nu / norm, WEIGHT_SIGMA)  # S^T(m . nu_i)
    if variant == "no_extra_term":
        coupling = torch.zeros_like(coupling)
    dm = torch.zeros_like(m)
    for j in range(2):
        for k in range(2):
            dm[:, j] -= _diff(m[:, j] * v[:, k], k, "zero") + _diff(v[:, k], j, "zero") * m[:, k]
        dm[:, j] += (coupling * _diff(h, j, "neumann")).sum(1)
    dh = -sum(_diff(h, k, "neumann") * v[:, k : k + 1] for k in range(2))
    if variant == "frozen_h":
        dh = torch.zeros_like(dh)
    dphi = -sum(_diff(phi, k, "linear") * v[:, k : k + 1] for k in range(2))
    return dm, dh, dphi


def _rk38(rhs, state, steps):
    dt = 1.0 / steps
    for _ in range(steps):
        k1 = rhs(*state)
        k2 = rhs(*[y + dt * a / 3 for y, a in zip(state, k1)])
        k3 = rhs(*[y + dt * (b - a / 3) for y, a, b in zip(state, k1, k2)])
        k4 = rhs(*[y + dt * (a - b + c) for y, a, b, c in zip(state, k1, k2, k3)])
        state = [y + dt * (a + 3 * (b + c) + d) / 8 for y, a, b, c, d in zip(state, k1, k2, k3, k4)]
    return state


# ----------------------------------------------------------------------------- inputs
def _inputs():
    """Momentum on the left (x0 < 0.4), pre-weights varying only on the right (x0 > 0.42)."""
    x = identity_map(SHAPE, dtype=DTYPE)
    g = torch.Generator().manual_seed(3)
    r2 = ((x[:, 0:1] - 0.25) ** 2 + (x[:, 1:2] - 0.5) ** 2) / 0.15**2
    bump = (1 - r2).clamp_min(0) ** 3
    m0 = torch.randn(1, 2, 1, 1, generator=g, dtype=DTYPE) * bump * 0.3
    right = ((x[:, 0:1] - 0.42) / 0.1).clamp(0, 1)  # 0 where the momentum lives
    wave = torch.stack([torch.cos(6 * x[:, 1] + 2 * i) for i in range(3)], dim=1) ** 2
    h2 = torch.tensor([0.2, 0.3, 0.5], dtype=DTYPE).view(1, 3, 1, 1) * (1 - right)
    h2 = h2 + right * (0.02 + wave) / (0.02 + wave).sum(1, keepdim=True)
    h0 = (h2 / h2.sum(1, keepdim=True)).sqrt()
    assert (m0.abs().sum(1, keepdim=True) * right).abs().max() == 0
    return m0, h0


def _library_dynamics():
    sp = domain_spacing(SHAPE)
    kernels = fourier_gaussian_kernels(SHAPE, SIGMAS, sp, dtype=DTYPE)
    return RDMMDynamics(kernels, WEIGHT_SIGMA, sp, forward_map=False)


def _close(a, b):
    """Largest difference relative to the larger of the two fields."""
    return float((a - b).abs().max() / torch.maximum(a.abs().max(), b.abs().max()))


# ----------------------------------------------------------------------------- tests
WRONG = ("no_extra_term", "plain_adjoint", "frozen_h")


def test_right_hand_side_matches_the_reference_where_all_rdmm_terms_act():
    m0, h0 = _inputs()
    phi = identity_map(SHAPE, dtype=DTYPE).clone()
    dyn = _library_dynamics()
    # at t = 0 and at a later state where m and h have moved
    mid = integrate(dyn, (m0, h0, phi), SolverOptions("rk4", 8), torch.tensor([0.0, 0.6]))
    for state in [(m0, h0, phi), tuple(s[-1] for s in mid)]:
        ours = dyn(torch.zeros((), dtype=DTYPE), state)
        for name, a, b in zip(("dm", "dh", "dphi"), ours, _reference_rhs(*state)):
            assert _close(a, b) < 1e-12, name
        # the known wrong variants differ a million times more: the comparison can fail
        for variant in WRONG:
            wrong = _reference_rhs(*state, variant=variant)
            assert max(_close(a, b) for a, b in zip(ours, wrong)) > 1e-6, variant


def test_shooting_matches_the_reference():
    m0, h0 = _inputs()
    phi = identity_map(SHAPE, dtype=DTYPE).clone()
    res = shoot_rdmm(m0, h0, SIGMAS, WEIGHT_SIGMA, solver=SolverOptions("rk4", 10))
    m1, h1, phi1 = _rk38(_reference_rhs, [m0, h0, phi], 10)
    spacing = torch.tensor(domain_spacing(SHAPE), dtype=DTYPE).view(1, 2, 1, 1)
    assert ((phi1 - phi).abs() / spacing).max() > 1.5  # voxels: a real deformation
    assert _close(res.phi_inv, phi1) < 1e-12
    assert _close(res.momentum, m1) < 1e-11
    assert _close(res.pre_weights, h1) < 1e-11
    for variant in WRONG:
        m_bad, h_bad, phi_bad = _rk38(
            lambda *s, v=variant: _reference_rhs(*s, variant=v), [m0, h0, phi], 10
        )
        assert _close(res.momentum, m_bad) > 1e-6 or _close(res.pre_weights, h_bad) > 1e-6
