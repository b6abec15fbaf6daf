"""The fast separable Gaussian operator (ops/separable_smoothing.py): accuracy against a direct
spatial convolution, symmetry, positive semi-definiteness, the same operator for LDDMM and RDMM,
autograd with nothing saved, and the float32 default. Each invariant check is also run on a
variant that must fail it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.separable_smoothing import (
    apply_separable,
    apply_separable_weighted,
    normalized_separable_operator,
)
from rdmm_lightning.ops.smoothing import (
    KERNEL_TOL,
    TRUNCATE,
    default_kernel_tol,
    fft_convolve,
    fourier_gaussian_kernels,
    gaussian_smooth,
    smooth_pre_weights,
    weighted_convolve,
)

F64 = torch.float64
SIGMAS = (0.05, 0.1, 0.2, 0.3)
ACCURACY = 1e-3  # relative L2, the design tolerance of the smoothing


# ----------------------------------------------------------------------------- reference
def _gauss1d(sigma_vox: float) -> torch.Tensor:
    r = math.ceil(TRUNCATE * sigma_vox)
    x = torch.arange(-r, r + 1, dtype=F64)
    g = torch.exp(-0.5 * (x / sigma_vox) ** 2)
    return g / g.sum()


def _direct(f: torch.Tensor, sigma: float, spacing) -> torch.Tensor:
    """Direct linear convolution (zero padding) of ``f: (B, C, *S)`` with the truncated sum-1
    Gaussian: one conv2d with the full 2D kernel, or conv1d along each axis in 3D (the Gaussian
    is separable, so this is the same direct convolution)."""
    ndim = f.dim() - 2
    gs = [_gauss1d(sigma / h) for h in spacing]
    b, c, *shape = f.shape
    if ndim == 2:
        k = torch.outer(gs[0], gs[1])[None, None]
        x = f.reshape(b * c, 1, *shape)
        return F.conv2d(x, k, padding=(len(gs[0]) // 2, len(gs[1]) // 2)).view(f.shape)
    out = f
    for d, g in enumerate(gs):
        x = out.movedim(2 + d, -1)
        moved = x.shape
        y = F.conv1d(x.reshape(-1, 1, moved[-1]), g.view(1, 1, -1), padding=len(g) // 2)
        out = y.view(moved).movedim(-1, 2 + d)
    return out


def _fields(shape, seed=0):
    """(white noise, smooth field, bump at the border), each (1, 1, *S) float64."""
    g = torch.Generator().manual_seed(seed)
    white = torch.randn(1, 1, *shape, generator=g, dtype=F64)
    smooth = _direct(torch.randn(1, 1, *shape, generator=g, dtype=F64), 0.08, domain_spacing(shape))
    x = torch.stack(
        torch.meshgrid(*[torch.linspace(0, 1, n, dtype=F64) for n in shape], indexing="ij")
    )
    bump = torch.exp(-((x - 0.05) ** 2).sum(0) / 0.02)[None, None]
    return white, smooth, bump


def _rel(a, b):
    return float((a - b).norm() / b.norm())


SHAPES = [(48, 37), (64, 64), (20, 33, 27), (24, 24, 24)]


def _errors(shape, tol):
    sp = domain_spacing(shape)
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=F64, tol=tol)
    errs = []
    for f in _fields(shape):
        out = fft_convolve(f.unsqueeze(1).expand(-1, len(SIGMAS), -1, *shape), kern)
        for i, sigma in enumerate(SIGMAS):
            errs.append(_rel(out[:, i], _direct(f, sigma, sp)))
    return errs, kern


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("shape", SHAPES)
def test_fast_operator_matches_the_direct_convolution(shape):
    errs, kern = _errors(shape, KERNEL_TOL)
    # not vacuous: some axes are truncated to a rank well below their length
    assert any(r <= n // 2 for term in kern.separable.ranks for r, n in zip(term, shape))
    print(shape, f"max relative L2 error {max(errs):.2e}")
    assert max(errs) < ACCURACY


@pytest.mark.parametrize("shape", [(64, 64), (24, 24, 24)])
def test_accuracy_check_fails_for_a_too_coarse_truncation(shape):
    """Negative control: keeping only the eigenvalues above 5% of the largest is far outside
    the tolerance on the same fields."""
    errs, _ = _errors(shape, 0.05)
    assert max(errs) > 10 * ACCURACY


def test_normalised_pre_weight_smoothing_matches_the_direct_one():
    shape = (40, 35)
    sp = domain_spacing(shape)
    op = normalized_separable_operator(
        shape, 0.1, sp, TRUNCATE, KERNEL_TOL, F64, torch.device("cpu")
    )
    ones = torch.ones(1, 1, *shape, dtype=F64)
    for f in _fields(shape):
        ref = _direct(f, 0.1, sp) / _direct(ones, 0.1, sp)
        assert _rel(apply_separable(f, op), ref) < ACCURACY
    const = torch.full((2, 3, *shape), 0.3, dtype=F64)
    torch.testing.assert_close(apply_separable(const, op), const, atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------- symmetry, PSD
@pytest.mark.parametrize("shape", [(30, 23), (12, 15, 10)])
def test_fast_operator_is_symmetric(shape):
    sp = domain_spacing(shape)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, 3, *shape, generator=g, dtype=F64)
    w = torch.randn(2, 3, *shape, generator=g, dtype=F64)
    for weights in (None, (0.1, 0.2, 0.3, 0.4)):
        kern = fourier_gaussian_kernels(
            shape, SIGMAS, sp, weights=weights, dtype=F64, tol=KERNEL_TOL
        )
        uu = u if weights else u.unsqueeze(1).expand(-1, 4, -1, *shape)
        ww = w if weights else w.unsqueeze(1).expand(-1, 4, -1, *shape)
        lhs = (fft_convolve(uu, kern) * ww).sum()
        rhs = (uu * fft_convolve(ww, kern)).sum()
        assert abs(float(lhs - rhs)) < 1e-12 * float(uu.norm() * ww.norm())
    # S and S^T form an adjoint pair; S itself is not symmetric (the check can fail)
    op = normalized_separable_operator(
        shape, 0.15, sp, TRUNCATE, KERNEL_TOL, F64, torch.device("cpu")
    )
    su_w = (apply_separable(u, op) * w).sum()
    assert abs(float(su_w - (u * apply_separable(w, op.adjoint)).sum())) < 1e-12 * float(
        u.norm() * w.norm()
    )
    assert abs(float(su_w - (u * apply_separable(w, op)).sum())) > 1e-6 * float(u.norm() * w.norm())


def _dense_matrix(apply, shape):
    n = math.prod(shape)
    eye = torch.eye(n, dtype=F64).view(n, 1, *shape)
    mat = apply(eye).reshape(n, n)
    return 0.5 * (mat + mat.T)


@pytest.mark.parametrize("shape", [(21, 18), (17, 10, 9)])
def test_fast_operator_is_positive_semidefinite(shape):
    sp = domain_spacing(shape)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(50, 1, *shape, generator=g, dtype=F64)
    for weights in (None, (0.5, 0.5)):
        sigmas = (0.15,) if weights is None else (0.15, 0.3)
        fast = fourier_gaussian_kernels(
            shape, sigmas, sp, weights=weights, dtype=F64, tol=KERNEL_TOL
        )
        assert any(r < n for term in fast.separable.ranks for r, n in zip(term, shape))
        quad = (u * fft_convolve(u, fast)).flatten(1).sum(1)
        assert float(quad.min()) >= -1e-12 * float(u.flatten(1).pow(2).sum(1).max())
        lam = torch.linalg.eigvalsh(_dense_matrix(lambda e, k=fast: fft_convolve(e, k), shape))
        print(shape, sigmas, f"fast: eigenvalues in [{float(lam[0]):.1e}, {float(lam[-1]):.2f}]")
        assert float(lam[0]) >= -1e-12 * float(lam[-1])
    # the check can fail: the exact truncated Gaussian (FFT) has negative eigenvalues
    exact = fourier_gaussian_kernels(shape, (0.15,), sp, dtype=F64, tol=0)
    lam = torch.linalg.eigvalsh(_dense_matrix(lambda e: fft_convolve(e, exact), shape))
    print(shape, f"exact: smallest eigenvalue {float(lam[0]):.1e}")
    assert float(lam[0]) < -1e-7 * float(lam[-1])


# ----------------------------------------------------------------------------- LDDMM == RDMM
@pytest.mark.parametrize("shape", [(40, 31), (16, 21, 18)])
def test_combined_kernel_is_the_weighted_sum_of_the_stacked_ones(shape):
    """LDDMM's K = sum_i c_i K_i uses exactly RDMM's per-kernel operators."""
    sp = domain_spacing(shape)
    weights = (0.1, 0.2, 0.3, 0.4)
    stacked = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=F64, tol=KERNEL_TOL)
    combined = fourier_gaussian_kernels(
        shape, SIGMAS, sp, weights=weights, dtype=F64, tol=KERNEL_TOL
    )
    m = torch.randn(2, len(shape), *shape, dtype=F64)
    nu = fft_convolve(m.unsqueeze(1).expand(-1, 4, -1, *shape), stacked)
    c = torch.tensor(weights, dtype=F64).view(1, 4, *[1] * (len(shape) + 1))
    torch.testing.assert_close(fft_convolve(m, combined), (c * nu).sum(1), atol=1e-14, rtol=0)


def test_rdmm_with_constant_pre_weights_has_the_lddmm_right_hand_side():
    from rdmm_lightning.ops import identity_map
    from rdmm_lightning.shooting.lddmm import EPDiffDynamics
    from rdmm_lightning.shooting.rdmm import RDMMDynamics

    shape = (26, 30)
    sp = domain_spacing(shape)
    weights = (0.1, 0.2, 0.3, 0.4)
    stacked = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=F64, tol=KERNEL_TOL)
    combined = fourier_gaussian_kernels(
        shape, SIGMAS, sp, weights=weights, dtype=F64, tol=KERNEL_TOL
    )
    m = _direct(torch.randn(1, 2, *shape, dtype=F64), 0.05, sp)
    h = torch.tensor(weights, dtype=F64).sqrt().view(1, 4, 1, 1).expand(1, 4, *shape).clone()
    phi = identity_map(shape, sp, dtype=F64).clone()
    t = torch.zeros((), dtype=F64)
    dm_r, dh, dphi_r = RDMMDynamics(stacked, 0.07, sp, forward_map=False)(t, (m, h, phi))
    dm_l, dphi_l = EPDiffDynamics(combined, sp, forward_map=False)(t, (m, phi))
    assert _rel(dm_r, dm_l) < 1e-12 and _rel(dphi_r, dphi_l) < 1e-12
    assert float(dh.abs().max()) < 1e-12


# ----------------------------------------------------------------------------- autograd
def test_fast_operators_gradcheck_and_save_nothing():
    shape = (7, 9)
    sp = (1 / 6, 1 / 8)
    kern = fourier_gaussian_kernels(shape, (0.3, 0.6), sp, dtype=F64, tol=KERNEL_TOL)
    assert kern.separable is not None and min(min(t) for t in kern.separable.ranks) < 7
    f = torch.randn(1, 2, 3, *shape, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fft_convolve(x, kern), (f,))
    assert torch.autograd.gradgradcheck(lambda x: fft_convolve(x, kern), (f,))
    op = normalized_separable_operator(
        shape, 0.4, sp, TRUNCATE, KERNEL_TOL, F64, torch.device("cpu")
    )
    g = torch.randn(2, 3, *shape, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: apply_separable(x, op), (g,))
    assert torch.autograd.gradcheck(lambda x: apply_separable(x, op.adjoint), (g,))
    m = torch.randn(2, 2, *shape, dtype=F64, requires_grad=True)
    w = torch.rand(2, 2, *shape, dtype=F64, requires_grad=True)
    weighted = lambda a, b: apply_separable_weighted(a, b, kern.separable)  # noqa: E731
    assert torch.autograd.gradcheck(weighted, (m, w))
    assert torch.autograd.gradgradcheck(weighted, (m, w))
    # nothing but the cached factors is kept by the convolutions; the weighted one keeps its
    # inputs m and w (which the product w_i m would keep as well) and nothing else
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        fft_convolve(f, kern)
        apply_separable(g, op)
        assert saved == []
        weighted(m, w)
    assert {x.data_ptr() for x in saved} == {m.data_ptr(), w.data_ptr()}


def test_weighted_convolution_is_the_convolution_of_the_products():
    shape = (15, 12, 13)
    sp = domain_spacing(shape)
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=F64, tol=KERNEL_TOL)
    m = torch.randn(2, 3, *shape, dtype=F64)
    w = torch.rand(2, 4, *shape, dtype=F64)
    ref = fft_convolve(w.unsqueeze(2) * m.unsqueeze(1), kern)
    torch.testing.assert_close(weighted_convolve(m, w, kern), ref, atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match=r"w must have shape \(B, 4, \*S\)"):
        weighted_convolve(m, w[:, :3], kern)


# ----------------------------------------------------------------------------- defaults
def test_float32_uses_the_fast_operator_and_float64_the_exact_one():
    shape = (50, 44)
    sp = domain_spacing(shape)
    assert default_kernel_tol(torch.float64) == 0 and default_kernel_tol(torch.float32) > 0
    k32 = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=torch.float32)
    k64 = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=F64)
    assert k32.separable is not None and k64.separable is None
    assert k32 is fourier_gaussian_kernels(list(shape), list(SIGMAS), list(sp))  # cached
    f = torch.randn(2, 3, *shape, dtype=F64)
    for sigma in (0.05, 0.2):
        assert (
            _rel(gaussian_smooth(f.float(), sigma, sp).double(), _direct(f, sigma, sp)) < ACCURACY
        )
        torch.testing.assert_close(gaussian_smooth(f, sigma, sp), _direct(f, sigma, sp))
    h = torch.rand(1, 4, *shape, dtype=F64)
    assert (
        _rel(smooth_pre_weights(h.float(), 0.1, sp).double(), smooth_pre_weights(h, 0.1, sp))
        < ACCURACY
    )
    with pytest.raises(ValueError, match="tol"):
        fourier_gaussian_kernels(shape, SIGMAS, sp, tol=1.5)


def test_lddmm_energy_is_conserved_with_the_fast_operator():
    """Discrete energy conservation needs a symmetric K (see epdiff_rhs): <m, K m> stays
    constant to time-stepping error along an LDDMM geodesic of 5 voxels with the fast operator,
    and drifts with a 1% asymmetric version of it (the check can fail)."""
    from rdmm_lightning.ops import identity_map
    from rdmm_lightning.ops.separable_smoothing import AxisFactor, SeparableOperator
    from rdmm_lightning.ops.smoothing import FourierKernels
    from rdmm_lightning.shooting import SolverOptions, integrate, momentum_energy
    from rdmm_lightning.shooting.lddmm import EPDiffDynamics

    shape = (40, 36)
    sp = domain_spacing(shape)
    kern = fourier_gaussian_kernels(
        shape, (0.05, 0.1, 0.2), sp, weights=(0.2, 0.3, 0.5), dtype=F64, tol=KERNEL_TOL
    )
    x = identity_map(shape, dtype=F64)
    bump = (1 - ((x - 0.5) ** 2).sum(1, keepdim=True) / 0.3**2).clamp_min(0) ** 3
    g = torch.Generator().manual_seed(0)
    m0 = 2 * _direct(torch.randn(1, 2, *shape, generator=g, dtype=F64), 0.05, sp) * bump

    def drift_and_displacement(k):
        dyn = EPDiffDynamics(k, sp, forward_map=False)
        phi = identity_map(shape, dtype=F64).clone()
        times = torch.linspace(0, 1, 6, dtype=F64)
        sol = integrate(dyn, (m0, phi), SolverOptions("rk4", 20), times)
        e = torch.cat([momentum_energy(m, dyn.velocity(m), sp) for m in sol[0]])
        h = torch.tensor(sp, dtype=F64).view(1, 2, 1, 1)
        return float((e - e[0]).abs().max() / e[0]), float(((sol[1][-1] - phi) / h).abs().max())

    drift, disp = drift_and_displacement(kern)
    print(f"drift {drift:.1e} at {disp:.1f} voxels")
    assert disp > 4 and drift < 1e-5
    terms = []
    for term in kern.separable.terms:
        ramp = 1 + 0.01 * torch.linspace(-1, 1, shape[0], dtype=F64).view(-1, 1)
        first = AxisFactor(term[0].down, term[0].up * ramp, term[0].rank)
        terms.append((first, *term[1:]))
    bad = SeparableOperator(kern.shape, tuple(terms), combined=True, symmetric=False)
    asymmetric = FourierKernels(lambda: kern.hat, kern.shape, kern.padded, 1, bad)
    assert drift_and_displacement(asymmetric)[0] > 100 * drift
