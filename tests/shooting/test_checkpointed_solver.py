"""The fixed-step integrator, step-wise recomputing (``SolverOptions(checkpoint=True)``, the
default) and recording every step (``checkpoint=False``), against torchdiffeq's fixed-grid
solvers on the same step grid (the reference): same values, same gradients; with
``checkpoint=True`` memory that does not grow with the steps beyond one state per step."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

import rdmm_lightning.shooting.solver as solver_module
from rdmm_lightning.ops import identity_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import fourier_gaussian_kernels
from rdmm_lightning.shooting import SolverOptions, integrate, shoot_lddmm, shoot_rdmm, shoot_vsvf
from rdmm_lightning.shooting.lddmm import EPDiffDynamics
from rdmm_lightning.shooting.rdmm import RDMMDynamics
from tests.helpers import smooth_momentum, smooth_pre_weights

SIGMAS = (0.1, 0.2)
WEIGHTS = (0.4, 0.6)
TIMES = torch.tensor([0.0, 0.3, 0.55, 1.0], dtype=torch.float64)  # 0.3, 0.55: off the 1/7 grid
MODELS = ("svf", "lddmm", "rdmm-pde", "rdmm-interpolate")


def _shoot(model: str, m: torch.Tensor, h: torch.Tensor, solver: SolverOptions):
    times = TIMES.to(m.dtype)
    if model == "svf":
        return shoot_vsvf(m, SIGMAS, WEIGHTS, solver=solver, forward_map=True, times=times)
    if model == "lddmm":
        return shoot_lddmm(m, SIGMAS, WEIGHTS, solver=solver, forward_map=True, times=times)
    mode = model.split("-")[1]
    return shoot_rdmm(m, h, SIGMAS, 0.1, solver=solver, h_mode=mode, times=times)


def _inputs(shape, dtype=torch.float64):
    m0 = smooth_momentum(shape, batch=2) * 2  # displacements of ~1.5-3 voxels at t = 1
    return m0.to(dtype), smooth_pre_weights(shape, n=len(SIGMAS), batch=2).to(dtype)


def _torchdiffeq_fixed(dynamics, state, t, method, num_steps, checkpoint=True):
    """The reference: torchdiffeq's fixed-grid ``method`` on the solver's step grid."""
    grid = solver_module._StepGrid(num_steps)
    return odeint(dynamics, state, t, method=method, options={"grid_constructor": grid})


@contextlib.contextmanager
def _on_torchdiffeq(reference: bool = True):
    """Within: the fixed-step methods integrate through torchdiffeq (if ``reference``)."""
    with pytest.MonkeyPatch.context() as patch:
        if reference:
            patch.setattr(solver_module, "_integrate_fixed", _torchdiffeq_fixed)
        yield


def _trajectory_and_grads(model, shape, solver, dtype=torch.float64, reference=False):
    m0, h0 = _inputs(shape, dtype)
    m = m0.clone().requires_grad_(True)
    h = h0.clone().requires_grad_(True)
    with _on_torchdiffeq(reference):
        traj = _shoot(model, m, h, solver).trajectory
    g = torch.Generator().manual_seed(3)
    loss = sum((x * torch.randn(x.shape, generator=g, dtype=x.dtype)).sum() for x in traj.values())
    loss.backward()
    grads = [m.grad] + ([h.grad] if model.startswith("rdmm") else [])
    return {k: v.detach() for k, v in traj.items()}, grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _classic_rk4(t0, dt, t1, y0):
    """The 1/6 rule: a different rk4 than torchdiffeq's ``"rk4"`` (negative control)."""
    k1 = yield t0, y0
    k2 = yield t0 + dt / 2, tuple(a + dt / 2 * b for a, b in zip(y0, k1))
    k3 = yield t0 + dt / 2, tuple(a + dt / 2 * b for a, b in zip(y0, k2))
    k4 = yield t1, tuple(a + dt * b for a, b in zip(y0, k3))
    return tuple(a + dt / 6 * (b + 2 * c + 2 * d + e) for a, b, c, d, e in zip(y0, k1, k2, k3, k4))


@pytest.mark.parametrize("checkpoint", [True, False])
@pytest.mark.parametrize("method", solver_module.FIXED_STEP_METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_forward_values_equal_torchdiffeq(method, model, checkpoint):
    solver = SolverOptions(method, 7, checkpoint=checkpoint)
    new, _ = _trajectory_and_grads(model, (12, 14), solver)
    old, _ = _trajectory_and_grads(model, (12, 14), solver, reference=True)
    assert new.keys() == old.keys()
    for key in new:
        assert new[key].shape == old[key].shape == (len(TIMES), *old[key].shape[1:])
        assert _rel(new[key], old[key]) < 1e-13, key


def test_forward_comparison_detects_another_rk4(monkeypatch):
    """Negative control: the classic rk4 differs from torchdiffeq's 3/8 rule by far more than
    the tolerance of the test above."""
    classic = solver_module._Method(_classic_rk4, solver_module._METHODS["rk4"].a, (1,) * 4)
    monkeypatch.setitem(solver_module._METHODS, "rk4", classic)
    for checkpoint in (True, False):
        solver = SolverOptions("rk4", 7, checkpoint=checkpoint)
        new, _ = _trajectory_and_grads("lddmm", (12, 14), solver)
        old, _ = _trajectory_and_grads("lddmm", (12, 14), solver, reference=True)
        assert _rel(new["phi_inv"], old["phi_inv"]) > 1e-10


@pytest.mark.parametrize("checkpoint", [True, False])
@pytest.mark.parametrize("shape", [(12, 14), (6, 7, 8)])
@pytest.mark.parametrize("method", solver_module.FIXED_STEP_METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_gradients_equal_torchdiffeq(model, method, shape, checkpoint):
    solver = SolverOptions(method, 5, checkpoint=checkpoint)
    _, new = _trajectory_and_grads(model, shape, solver)
    _, old = _trajectory_and_grads(model, shape, solver, reference=True)
    for g_new, g_old in zip(new, old):
        assert _rel(g_new, g_old) < 1e-10


@pytest.mark.parametrize("shape", [(12, 14), (6, 7, 8)])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("checkpoint", [True, False])
def test_float32_gradients_equal_torchdiffeq(model, shape, checkpoint):
    """float32 takes the separable smoothing operator, not the FFT."""
    solver = SolverOptions("rk4", 5, checkpoint=checkpoint)
    traj, new = _trajectory_and_grads(model, shape, solver, torch.float32)
    old_traj, old = _trajectory_and_grads(model, shape, solver, torch.float32, reference=True)
    assert all(torch.equal(traj[k], old_traj[k]) for k in traj)
    for g_new, g_old in zip(new, old):
        assert g_new.dtype == torch.float32 and _rel(g_new, g_old) < 1e-5


def test_gradient_comparison_detects_a_wrong_tableau(monkeypatch):
    """Negative control: a tableau that does not transpose the stage arithmetic (a31 = +1/3
    instead of -1/3) leaves the forward values alone and breaks the gradients."""
    rk4 = solver_module._METHODS["rk4"]
    wrong = ((), (1 / 3,), (1 / 3, 1.0), (1.0, -1.0, 1.0))
    monkeypatch.setitem(
        solver_module._METHODS, "rk4", solver_module._Method(rk4.stages, wrong, rk4.b)
    )
    _, new = _trajectory_and_grads("rdmm-pde", (12, 14), SolverOptions("rk4", 5))
    solver = SolverOptions("rk4", 5, checkpoint=False)
    _, old = _trajectory_and_grads("rdmm-pde", (12, 14), solver, reference=True)
    assert min(_rel(a, b) for a, b in zip(new, old)) > 1e-6


@pytest.mark.parametrize("kept", [0, 1, 4])
def test_gradients_do_not_depend_on_the_stage_graphs_kept(monkeypatch, kept):
    monkeypatch.setattr(solver_module, "_KEPT_STAGE_GRAPHS", kept)
    _, new = _trajectory_and_grads("rdmm-pde", (12, 14), SolverOptions("rk4", 5))
    solver = SolverOptions("rk4", 5, checkpoint=False)
    _, old = _trajectory_and_grads("rdmm-pde", (12, 14), solver, reference=True)
    for g_new, g_old in zip(new, old):
        assert _rel(g_new, g_old) < 1e-10


class _Linear(nn.Module):
    """``d(x, y)/dt = (A x + c, B y)`` with parameters ``A`` and ``c`` and a captured tensor
    ``B`` (test dynamics: captured tensors, entries that do not require grad)."""

    def __init__(self, captured: torch.Tensor):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.a = nn.Parameter(torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.5)
        self.c = nn.Parameter(torch.randn(3, dtype=torch.float64, generator=g))
        self.b = captured

    def forward(self, t, state):
        x, y = state
        return x @ self.a.T + self.c, y @ self.b.T


def _linear_grads(
    checkpoint: bool, times=TIMES, y_requires_grad=False, b_is_y=False, reference=False
):
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    y0 = torch.randn(3, 3, generator=g, dtype=torch.float64).requires_grad_(y_requires_grad)
    base = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = y0 if b_is_y else base * 0.3  # a non-leaf tensor captured by the dynamics
    dyn = _Linear(b)
    with _on_torchdiffeq(reference):
        xs, ys = integrate(dyn, (x0, y0), SolverOptions("rk4", 6, checkpoint=checkpoint), times)
    loss = (xs * torch.randn(xs.shape, generator=g, dtype=xs.dtype)).sum() + ys.pow(2).sum()
    wrt = [x0, dyn.a, dyn.c, base] + ([y0] if y_requires_grad else [])
    return xs.detach(), ys.detach(), torch.autograd.grad(loss, wrt, allow_unused=True)


@pytest.mark.parametrize("y_requires_grad", [False, True])
@pytest.mark.parametrize("b_is_y", [False, True])
@pytest.mark.parametrize("checkpoint", [True, False])
def test_parameters_and_captured_tensors_get_their_gradients(y_requires_grad, b_is_y, checkpoint):
    options = {"y_requires_grad": y_requires_grad, "b_is_y": b_is_y}
    xs, ys, new = _linear_grads(checkpoint, **options)
    xs_old, ys_old, old = _linear_grads(checkpoint, reference=True, **options)
    assert torch.equal(xs, xs_old) and torch.equal(ys, ys_old)
    for g_new, g_old in zip(new, old):
        if g_old is None:
            assert g_new is None
        else:
            assert g_new is not None and _rel(g_new, g_old) < 1e-12


@pytest.mark.parametrize("checkpoint", [True, False])
def test_reversed_times_equal_torchdiffeq(checkpoint):
    times = torch.tensor([1.0, 0.6, 0.0], dtype=torch.float64)
    xs, ys, new = _linear_grads(checkpoint, times=times)
    xs_old, ys_old, old = _linear_grads(checkpoint, reference=True, times=times)
    assert torch.equal(xs, xs_old) and torch.equal(ys, ys_old)
    for g_new, g_old in zip(new, old):
        assert _rel(g_new, g_old) < 1e-12


@pytest.mark.parametrize("checkpoint", [True, False])
def test_output_time_just_off_the_grid_is_interpolated_like_torchdiffeq(checkpoint):
    """A requested time within 1e-9 of a grid point does not add a step: the output is
    interpolated inside the next step (weight ~1e-10 on its end state)."""
    times = torch.tensor([0.0, 0.3 + 1e-11, 1.0], dtype=torch.float64)
    xs, ys, new = _linear_grads(checkpoint, times=times)
    xs_old, ys_old, old = _linear_grads(checkpoint, reference=True, times=times)
    assert torch.equal(xs, xs_old) and torch.equal(ys, ys_old)
    for g_new, g_old in zip(new, old):
        assert _rel(g_new, g_old) < 1e-12


# ---------------------------------------------------------------------------------------------
# memory: what autograd keeps for backward, counted through saved-tensor hooks


class _SavedBytes:
    """Bytes of the distinct storages saved for backward: the total saved during the forward
    pass, and the peak of those saved and not yet used during the backward pass. The solver
    saves its recomputations through its own hooks: the test routes them through here."""

    def __init__(self):
        self.count: dict[int, int] = {}
        self.live = self.saved = self.backward_peak = 0
        self.in_backward = False

    def pack(self, x):
        key, size = x.untyped_storage().data_ptr(), x.untyped_storage().nbytes()
        if self.count.get(key, 0) == 0:
            self.live += size
            self.saved += size
        self.count[key] = self.count.get(key, 0) + 1
        if self.in_backward:
            self.backward_peak = max(self.backward_peak, self.live)
        return x

    def unpack(self, x):
        key = x.untyped_storage().data_ptr()
        self.count[key] -= 1
        if self.count[key] == 0:
            self.live -= x.untyped_storage().nbytes()
        return x


def _saved_bytes(model: str, steps: int, checkpoint: bool, monkeypatch) -> tuple[int, int, int]:
    """(bytes saved by the forward pass, peak saved and unused during backward, one state)."""
    shape = (16, 18)
    sp = domain_spacing(shape)
    m0, h0 = _inputs(shape)
    phi = identity_map(shape, sp, dtype=m0.dtype).expand(2, -1, *shape).clone()
    kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=m0.dtype)
    if model == "lddmm":
        kern = fourier_gaussian_kernels(shape, SIGMAS, sp, weights=WEIGHTS, dtype=m0.dtype)
        dyn, state = EPDiffDynamics(kern, sp, False), (m0.requires_grad_(), phi)
    else:
        dyn, state = RDMMDynamics(kern, 0.1, sp, False), (m0.requires_grad_(), h0, phi)
    rec = _SavedBytes()

    def routed(func):
        return torch.autograd.graph.saved_tensors_hooks(
            lambda x: rec.pack(solver_module._compact(x)), rec.unpack
        )

    monkeypatch.setattr(solver_module, "_compact_saved_views", routed)
    with torch.autograd.graph.saved_tensors_hooks(rec.pack, rec.unpack):
        out = integrate(dyn, state, SolverOptions("rk4", steps, checkpoint=checkpoint))
        forward = rec.saved
        loss = out[1][-1].pow(2).sum()
        rec.in_backward = True
        loss.backward()
    if checkpoint:
        assert rec.live == 0  # everything saved was used once
    return forward, rec.backward_peak, sum(y.untyped_storage().nbytes() for y in state)


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_backward_keeps_one_state_per_step_plus_a_fixed_amount(model, monkeypatch):
    (fwd10, bwd10, state), (fwd40, bwd40, _) = (
        _saved_bytes(model, steps, True, monkeypatch) for steps in (10, 40)
    )
    # the forward pass saves the state at the start of every step, nothing else
    assert fwd10 == 10 * state and fwd40 == 40 * state
    # the backward pass adds the graphs of two stages at a time (measured 7.2 / 10.7 states,
    # LDDMM / RDMM; 14.2 / 21.1 with the graphs of all four), whatever the step count
    assert 0 < bwd10 == bwd40 < 12 * state


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_without_checkpointing_the_graph_of_every_step_is_kept(model, monkeypatch):
    """Negative control for the test above: without checkpointing the forward pass saves far
    more than one state per step, ~4x more for 4x the steps."""
    (fwd10, _, state), (fwd40, _, _) = (
        _saved_bytes(model, steps, False, monkeypatch) for steps in (10, 40)
    )
    assert fwd10 > 4 * 10 * state and fwd40 > 4 * 40 * state
    assert 3.5 < fwd40 / fwd10 < 4.5


# ---------------------------------------------------------------------------------------------
# options and paths


def test_checkpoint_option_is_validated():
    with pytest.raises(ValueError, match="checkpoint"):
        SolverOptions(checkpoint="yes")  # type: ignore[arg-type]


def test_times_must_be_monotonic():
    with pytest.raises(ValueError, match="times"):
        _linear_grads(True, times=torch.tensor([0.0, 0.7, 0.3, 1.0], dtype=torch.float64))


def test_double_backward_is_refused():
    x0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    dyn = _Linear(torch.eye(3, dtype=torch.float64))
    xs, _ = integrate(dyn, (x0, torch.ones(3, 3, dtype=torch.float64)), SolverOptions("rk4", 2))
    (g,) = torch.autograd.grad(xs[-1].pow(2).sum(), x0, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        g.sum().backward()


def test_no_graph_when_nothing_requires_grad():
    m0, _ = _inputs((12, 14))
    res = shoot_lddmm(m0, SIGMAS, WEIGHTS, solver=SolverOptions("rk4", 3), times=TIMES)
    assert not res.phi_inv.requires_grad and not res.trajectory["m"].requires_grad
    with torch.no_grad():
        again = shoot_lddmm(m0, SIGMAS, WEIGHTS, solver=SolverOptions("rk4", 3), times=TIMES)
    assert torch.equal(res.trajectory["phi_inv"], again.trajectory["phi_inv"])


@pytest.mark.parametrize(
    "options", [SolverOptions("dopri5"), SolverOptions("rk4", 4, adjoint=True)]
)
def test_dopri5_and_adjoint_stay_on_torchdiffeq(options, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the step-wise integrator was used")

    monkeypatch.setattr(solver_module, "_integrate_fixed", refuse)
    m0 = smooth_momentum((10, 10), batch=1).requires_grad_(True)
    shoot_lddmm(m0, SIGMAS, WEIGHTS, solver=options).phi_inv.sum().backward()
    assert m0.grad is not None


def test_checkpoint_false_records_the_steps_without_torchdiffeq(monkeypatch):
    """``checkpoint=False`` neither goes through torchdiffeq (which would flatten the tuple
    state into one tensor at every evaluation) nor through the recomputing node."""

    def refuse(*args, **kwargs):
        raise AssertionError("torchdiffeq or the recomputing node was used")

    monkeypatch.setattr(solver_module, "odeint", refuse)
    monkeypatch.setattr(solver_module._Trajectory, "apply", refuse)
    m0 = smooth_momentum((10, 10), batch=1).requires_grad_(True)
    solver = SolverOptions("rk4", 4, checkpoint=False)
    shoot_lddmm(m0, SIGMAS, WEIGHTS, solver=solver).phi_inv.sum().backward()
    assert m0.grad is not None


def test_double_backward_without_checkpointing_equals_torchdiffeq():
    """``checkpoint=False`` keeps plain autograd graphs: a gradient of a gradient works and
    equals torchdiffeq's."""

    def second_order(reference: bool) -> torch.Tensor:
        x0 = torch.linspace(-1, 1, 6, dtype=torch.float64).view(2, 3).requires_grad_(True)
        dyn = _Linear(torch.eye(3, dtype=torch.float64))
        state = (x0, torch.ones(3, 3, dtype=torch.float64))
        with _on_torchdiffeq(reference):
            xs, _ = integrate(dyn, state, SolverOptions("rk4", 3, checkpoint=False))
        loss = xs[-1].pow(3).sum()
        (g,) = torch.autograd.grad(loss, x0, create_graph=True)
        (gg,) = torch.autograd.grad(g.pow(2).sum(), x0)
        return gg

    ours, reference = second_order(False), second_order(True)
    assert ours.abs().max() > 0 and _rel(ours, reference) < 1e-12
