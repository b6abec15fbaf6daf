"""Maps of a linear velocity field against its analytic flow.

For ``v(x) = A (x - c)`` the flow is ``phi_t(x) = c + exp(t A) (x - c)`` and its inverse
``c + exp(-t A) (x - c)``. Both are affine, so the only discretisation left is time stepping:
central differences with linear extrapolation are exact for the affine ``phi^{-1}`` (Eulerian
transport), and (tri)linear interpolation of a linear ``v`` at ``phi`` is exact while ``phi``
stays inside the grid (Lagrangian flow); ``A`` is chosen so that it does.
The negative control advances ``phi`` with ``v(x)`` instead of ``v(phi)``, the bug that a
comparison against a fine-step run of the same code would not see.
"""

from __future__ import annotations

import pytest
import torch

from rdmm_lightning.ops import identity_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.shooting import SolverOptions, integrate_velocity, vsvf

# diagonally dominant with a negative diagonal: on every face the velocity points inwards, so
# the flow keeps the grid inside itself (a rotation part included)
A2 = [[-0.5, 0.3], [-0.3, -0.4]]
A3 = [[-0.5, 0.2, 0.1], [-0.2, -0.45, 0.2], [0.1, -0.2, -0.4]]
CASES = [((17, 21), A2), ((9, 11, 13), A3)]
TOL = 2e-7  # domain units; the rk4 error at 10 steps is 2e-8 to 6e-8 here


def _linear_velocity(shape, a):
    x = identity_map(shape, dtype=torch.float64) - 0.5
    a = torch.tensor(a, dtype=torch.float64)
    return torch.einsum("ij,bj...->bi...", a, x), a


def _affine_flow(shape, matrix):
    x = identity_map(shape, dtype=torch.float64) - 0.5
    return torch.einsum("ij,bj...->bi...", matrix, x) + 0.5


def _flows(shape, a, steps):
    v, a = _linear_velocity(shape, a)
    sp = domain_spacing(shape)
    phi_inv, phi, _ = integrate_velocity(v, sp, SolverOptions("rk4", steps), forward_map=True)
    exact_phi = _affine_flow(shape, torch.linalg.matrix_exp(a))
    exact_phi_inv = _affine_flow(shape, torch.linalg.matrix_exp(-a))
    return (phi - exact_phi).abs().max().item(), (phi_inv - exact_phi_inv).abs().max().item()


@pytest.mark.parametrize("shape,a", CASES)
def test_maps_of_a_linear_velocity_follow_the_matrix_exponential(shape, a):
    err_phi, err_phi_inv = _flows(shape, a, 10)
    fine_phi, fine_phi_inv = _flows(shape, a, 20)
    print(f"{shape}: phi {err_phi:.1e} -> {fine_phi:.1e}, phi_inv {err_phi_inv:.1e}")
    assert err_phi < TOL and err_phi_inv < TOL
    # fourth order in time: halving the step divides the error by about 16
    assert err_phi / fine_phi > 10 and err_phi_inv / fine_phi_inv > 10


@pytest.mark.parametrize("shape,a", CASES)
def test_a_forward_map_advanced_with_v_at_x_is_caught(shape, a, monkeypatch):
    monkeypatch.setattr(vsvf, "lagrangian_rhs", lambda phi, v, spacing: v)
    err_phi, err_phi_inv = _flows(shape, a, 10)
    assert err_phi > 1e3 * TOL
    assert err_phi_inv < TOL  # the inverse map does not use the Lagrangian right-hand side
