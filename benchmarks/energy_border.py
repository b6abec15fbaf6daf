"""Energy drift of LDDMM/RDMM shooting with momentum that reaches the image border.

    python benchmarks/energy_border.py [--threads 1]

Setting (as tests/shooting/test_energy_at_the_border.py): smooth random momentum, non-zero up to
2 voxels from every border, scaled to a ~5-voxel displacement; RDMM with spatially varying
pre-weights (3 Gaussians 0.03/0.06/0.1, pre-weight smoothing 0.05); float64, rk4. Prints the
relative drift max_t |E(t) - E(0)| / E(0) of E = <m, v> for the summation-by-parts momentum
differences (zero extension, the default) and for the first scheme (zero-Neumann), with 20 and
40 steps.
"""

from __future__ import annotations

import argparse

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
SCHEMES = {"zero extension (SBP, default)": "zero", "zero-Neumann (before)": "neumann"}


def _inputs(shape):
    g = torch.Generator().manual_seed(0)
    sp = domain_spacing(shape)
    m = gaussian_smooth(
        torch.randn(1, len(shape), *shape, generator=g, dtype=torch.float64), 0.05, sp
    )
    mask = torch.zeros(shape, dtype=torch.float64)
    mask[tuple(slice(2, n - 2) for n in shape)] = 1.0
    raw = torch.randn(
        1, len(SIGMAS), *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    h = normalize_pre_weights(gaussian_smooth(raw, 0.1, sp).abs() * 2 + 0.5)
    return m * mask, h


def _run(model, m0, h0, steps):
    shape = m0.shape[2:]
    sp = domain_spacing(shape)
    phi = identity_map(shape, dtype=torch.float64).clone()
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    solver = SolverOptions("rk4", steps)
    if model == "lddmm":
        kern = fourier_gaussian_kernels(shape, SIGMAS, sp, weights=WEIGHTS, dtype=torch.float64)
        dyn = EPDiffDynamics(kern, sp, forward_map=False)
        sol = integrate(dyn, (m0, phi), solver, times)
        e = [momentum_energy(m, dyn.velocity(m), sp) for m in sol[0]]
    else:
        kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=torch.float64)
        dyn = RDMMDynamics(kern, WEIGHT_SIGMA, sp, forward_map=False)
        sol = integrate(dyn, (m0, h0, phi), solver, times)
        e = [
            momentum_energy(m, region_specific_velocity(m, dyn.weights(h), kern)[0], sp)
            for m, h in zip(sol[0], sol[1])
        ]
    e = torch.cat(e)
    ident = identity_map(shape, dtype=torch.float64)
    h = torch.tensor(sp, dtype=torch.float64).view(1, -1, *[1] * len(shape))
    disp = float(((sol[-1][-1] - ident).abs() / h).max())
    return float((e - e[0]).abs().max() / e[0].abs()), disp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"float64, rk4, {args.threads} thread(s), torch {torch.__version__}")
    print("| model | grid | momentum differences | max displ. (vox) | drift 20 steps | 40 steps |")
    print("|---|---|---|---|---|---|")
    for shape in [(40, 40), (20, 20, 20)]:
        for model in ("lddmm", "rdmm"):
            m0, h0 = _inputs(shape)
            for _ in range(2):  # scale to ~5 voxels with the default scheme
                m0 = m0 * 5.0 / _run(model, m0, h0, 10)[1]
            for label, bc in SCHEMES.items():
                terms.MOMENTUM_BC = bc
                (d20, disp), (d40, _) = _run(model, m0, h0, 20), _run(model, m0, h0, 40)
                grid = "x".join(map(str, shape))
                print(f"| {model} | {grid} | {label} | {disp:.1f} | {d20:.1e} | {d40:.1e} |")
            terms.MOMENTUM_BC = "zero"


if __name__ == "__main__":
    main()
