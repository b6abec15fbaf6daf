"""The Courant limit of fixed-step shooting (``SolverOptions.max_cfl``): a shot whose initial
velocity moves too many voxels per step takes more steps instead of overflowing to NaN."""

from __future__ import annotations

import math

import pytest
import torch

from rdmm_lightning.shooting.lddmm import shoot_lddmm
from rdmm_lightning.shooting.rdmm import shoot_rdmm
from rdmm_lightning.shooting.solver import MAX_STEP_FACTOR, SolverOptions, steps_for_velocity
from rdmm_lightning.shooting.vsvf import shoot_vsvf

N = 32


def _bump_momentum(amplitude: float) -> torch.Tensor:
    """``(1, 2, N, N)`` float64: a Gaussian bump (std 0.1) pushing along the first axis."""
    x = torch.linspace(0, 1, N, dtype=torch.float64)
    xx, yy = torch.meshgrid(x, x, indexing="ij")
    m0 = torch.zeros(1, 2, N, N, dtype=torch.float64)
    m0[:, 0] = amplitude * torch.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / (2 * 0.1**2))
    return m0


def _shoot(model: str, amplitude: float, solver: SolverOptions) -> torch.Tensor:
    m0 = _bump_momentum(amplitude)
    if model == "lddmm":
        return shoot_lddmm(m0, [0.08], [1.0], None, solver).phi_inv
    if model == "rdmm":
        h0 = torch.full((1, 2, N, N), 0.5**0.5, dtype=torch.float64)
        return shoot_rdmm(m0, h0, [0.06, 0.1], 0.05, None, solver).phi_inv
    return shoot_vsvf(m0, [0.08], [1.0], None, solver).phi_inv


def _voxels(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference of two maps in voxels (domain [0, 1], N voxels per axis)."""
    return float((a - b).abs().max()) * (N - 1)


# amplitudes whose initial velocity moves ~37 (lddmm, rdmm) / ~19 (vsvf) voxels per unit time:
# 7.4 / 3.7 voxels per step at 5 rk4 steps
FAST = {"lddmm": 2.0, "rdmm": 2.0, "vsvf": 1.0}


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_a_fast_shot_overflows_without_the_limit_and_stays_finite_with_it(model):
    fast = FAST[model]
    unlimited = _shoot(model, fast, SolverOptions("rk4", 5, max_cfl=None))
    assert not bool(torch.isfinite(unlimited).all())  # the failure the limit prevents
    limited = _shoot(model, fast, SolverOptions("rk4", 5))
    reference = _shoot(model, fast, SolverOptions("rk4", 200, max_cfl=None))
    assert _voxels(limited, reference) < 0.5


@pytest.mark.parametrize("model", ["lddmm", "rdmm", "vsvf"])
def test_the_error_converges_with_the_courant_number(model):
    """rk4: halving the Courant number divides the error against 200 steps by about 2^4."""
    fast = FAST[model]
    reference = _shoot(model, fast, SolverOptions("rk4", 200, max_cfl=None))
    coarse = _voxels(_shoot(model, fast, SolverOptions("rk4", 5, max_cfl=2.0)), reference)
    fine = _voxels(_shoot(model, fast, SolverOptions("rk4", 5, max_cfl=1.0)), reference)
    assert math.isfinite(coarse) and fine < coarse / 4


def test_vsvf_at_its_step_count_is_far_off_without_the_limit():
    reference = _shoot("vsvf", FAST["vsvf"], SolverOptions("rk4", 200, max_cfl=None))
    unlimited = _shoot("vsvf", FAST["vsvf"], SolverOptions("rk4", 5, max_cfl=None))
    limited = _shoot("vsvf", FAST["vsvf"], SolverOptions("rk4", 5))
    assert _voxels(unlimited, reference) > 1.0
    assert _voxels(limited, reference) < 0.1


@pytest.mark.parametrize("model", ["lddmm", "rdmm", "vsvf"])
def test_a_slow_shot_is_unchanged(model):
    """Within the limit the shot takes exactly ``num_steps`` (bitwise the same result)."""
    slow = FAST[model] / 8
    limited = _shoot(model, slow, SolverOptions("rk4", 5))
    unlimited = _shoot(model, slow, SolverOptions("rk4", 5, max_cfl=None))
    assert torch.equal(limited, unlimited)


def test_steps_for_velocity_counts_voxels_per_step_on_the_finest_axis():
    v = torch.zeros(2, 2, 8, 16)
    spacing = (1 / 7, 1 / 15)
    v[1, 1, 3, 4] = -10 / 15  # 10 voxels per unit time along the finer axis
    v[0, 0, 2, 2] = 3 / 7  # 3 voxels along the coarser one
    solver = SolverOptions("rk4", 2, max_cfl=2.0)
    assert steps_for_velocity(solver, v, spacing).num_steps == 5
    assert steps_for_velocity(SolverOptions("rk4", 6), v, spacing).num_steps == 6
    assert steps_for_velocity(SolverOptions("rk4", 2, max_cfl=None), v, spacing).num_steps == 2
    assert steps_for_velocity(SolverOptions("dopri5"), v, spacing).num_steps == 10
    capped = steps_for_velocity(SolverOptions("euler", 1, max_cfl=0.1), v, spacing)
    assert capped.num_steps == MAX_STEP_FACTOR
    v[0, 0, 0, 0] = float("nan")
    assert steps_for_velocity(solver, v, spacing).num_steps == 2


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "abc"])
def test_max_cfl_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_cfl"):
        SolverOptions("rk4", 5, max_cfl=bad)
