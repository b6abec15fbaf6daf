"""``SolverOptions.compile``: the shooting right-hand sides through ``torch.compile``.

The traceable variants of the engine's operators (used while dynamo traces) give the eager
values; every right-hand side traces as one graph (a lookup inside it would break the graph and
leave the elementwise work unfused); compiled shots equal eager ones, forward and backward."""

from __future__ import annotations

import pytest
import torch

import rdmm_lightning.shooting.solver as solver_module
from rdmm_lightning.ops.finite_differences import _diff_forward, _diff_traceable
from rdmm_lightning.ops.grid import identity_map
from rdmm_lightning.ops.pre_weights import normalize_pre_weights
from rdmm_lightning.ops.separable_smoothing import (
    _apply,
    _apply_traceable,
    _apply_weighted,
    _apply_weighted_traceable,
    normalized_separable_operator,
    separable_operator,
)
from rdmm_lightning.ops.smoothing import fourier_gaussian_kernels, smooth_pre_weights
from rdmm_lightning.shooting.lddmm import EPDiffDynamics, shoot_lddmm
from rdmm_lightning.shooting.rdmm import RDMMDynamics, shoot_rdmm
from rdmm_lightning.shooting.solver import SolverOptions
from rdmm_lightning.shooting.vsvf import VelocityAdvection, shoot_vsvf

SIGMAS = (0.05, 0.1, 0.15)


@pytest.mark.parametrize("bc", ["neumann", "linear", "zero"])
def test_traceable_difference_equals_the_eager_one(bc):
    f = torch.randn(2, 3, 7, 9, 8)
    for dim in (2, 3, 4):
        assert torch.equal(_diff_traceable(f, dim, 0.25, bc), _diff_forward(f, dim, 0.25, bc))
    # negative control: the comparison tells the boundary treatments apart
    other = "neumann" if bc != "neumann" else "linear"
    assert not torch.equal(_diff_traceable(f, 3, 0.25, other), _diff_forward(f, 3, 0.25, bc))


def test_traceable_separable_operators_equal_the_eager_ones():
    shape, spacing = (20, 24), (1 / 19, 1 / 23)
    args = (4.0, 1e-4, torch.float32, torch.device("cpu"))
    stacked = separable_operator(shape, SIGMAS, None, spacing, *args)
    combined = separable_operator(shape, SIGMAS, (0.2, 0.3, 0.5), spacing, *args)
    normalized = normalized_separable_operator(shape, 0.06, spacing, *args)
    f = torch.randn(2, 3, 2, *shape)
    torch.testing.assert_close(_apply_traceable(f, stacked), _apply(f, stacked), rtol=0, atol=0)
    g = torch.randn(2, 2, *shape)
    for op in (combined, normalized, normalized.adjoint):
        torch.testing.assert_close(_apply_traceable(g, op), _apply(g, op), rtol=0, atol=0)
    w = torch.rand(2, 3, *shape)
    torch.testing.assert_close(
        _apply_weighted_traceable(g, w, stacked), _apply_weighted(g, w, stacked), rtol=0, atol=0
    )


def _state(shape, channels: int, forward_map: bool) -> tuple[torch.Tensor, ...]:
    spacing = tuple(1 / (n - 1) for n in shape)
    ident = identity_map(shape, spacing).expand(1, len(shape), *shape).clone()
    m = 0.1 * torch.randn(1, len(shape), *shape)
    h = normalize_pre_weights(torch.rand(1, channels, *shape) + 0.1)
    return (m, h, ident) + ((ident.clone(),) if forward_map else ())


class _LookupRDMM(RDMMDynamics):
    """Looks its pre-weight smoothing up at every call (through the cached function) instead
    of holding it: the variant the graph-break test guards against."""

    def weights(self, h):
        return smooth_pre_weights(h, self.weight_sigma, self.spacing)


def _dynamics(kind: str, shape):
    spacing = tuple(1 / (n - 1) for n in shape)
    stacked = fourier_gaussian_kernels(shape, SIGMAS, spacing)
    combined = fourier_gaussian_kernels(shape, SIGMAS, spacing, weights=(0.2, 0.3, 0.5))
    m, h, ident, ident2 = _state(shape, len(SIGMAS), True)
    if kind in ("rdmm", "lookup"):
        cls = RDMMDynamics if kind == "rdmm" else _LookupRDMM
        return cls(stacked, 0.06, spacing, forward_map=True), (m, h, ident, ident2)
    if kind == "rdmm-interpolate":
        dyn = RDMMDynamics(stacked, 0.06, spacing, forward_map=False, h_mode="interpolate")
        return dyn, (m, h, ident)
    if kind == "lddmm":
        return EPDiffDynamics(combined, spacing, forward_map=True), (m, ident, ident2)
    return VelocityAdvection(0.1 * torch.randn(1, 2, *shape), spacing, True), (ident, ident2)


@pytest.mark.parametrize("kind", ["rdmm", "rdmm-interpolate", "lddmm", "vsvf"])
def test_right_hand_sides_trace_as_one_graph(kind):
    torch._dynamo.reset()
    dyn, state = _dynamics(kind, (12, 14))
    explanation = torch._dynamo.explain(dyn)(torch.tensor(0.0), state)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_a_lookup_inside_the_right_hand_side_breaks_the_graph():
    """Negative control of the test above: the cached-function lookup of the pre-weight
    smoothing inside ``forward`` is not traceable."""
    torch._dynamo.reset()
    dyn, state = _dynamics("lookup", (12, 14))
    explanation = torch._dynamo.explain(dyn)(torch.tensor(0.0), state)
    assert explanation.graph_break_count > 0


@pytest.mark.parametrize("kind", ["rdmm", "lddmm", "lookup"])
def test_a_whole_rk4_step_traces_as_one_graph(kind):
    """Where no step is recomputed, a compiled shot compiles whole steps: the four stages and
    the combinations between them in one graph (negative control: the lookup breaks it)."""
    torch._dynamo.reset()
    dyn, state = _dynamics(kind, (12, 14))
    t0, dt = torch.tensor(0.0), torch.tensor(0.25)
    rk4 = solver_module._METHODS["rk4"]
    explain = torch._dynamo.explain(solver_module._step)
    explanation = explain(rk4, dyn, t0, dt, t0 + dt, state)
    if kind == "lookup":
        assert explanation.graph_break_count > 0
    else:
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


@pytest.mark.parametrize(
    "grad, checkpoint, shape, fused",
    [
        (True, False, (12, 14), 3),
        (False, True, (12, 14), 3),
        (True, True, (12, 14), 0),
        (False, True, (8, 10, 9), 0),
    ],
)
def test_whole_steps_are_compiled_where_no_step_is_recomputed(
    grad, checkpoint, shape, fused, monkeypatch
):
    """2D shots without gradients and with ``checkpoint=False`` take the compiled whole step
    and give the eager values; the recomputing node evaluates stage by stage, and 3D shots
    compile the right-hand side alone (a whole 3D step compiles for minutes)."""
    calls = []
    step = solver_module._fused_step
    monkeypatch.setattr(solver_module, "_fused_step", lambda *args: calls.append(1) or step(*args))
    torch.manual_seed(1)
    m0 = 0.3 * torch.randn(1, len(shape), *shape)
    h0 = normalize_pre_weights(torch.rand(1, len(SIGMAS), *shape) + 0.1)
    with torch.set_grad_enabled(grad):
        maps = [
            _shot("rdmm", m0.clone().requires_grad_(grad), h0, compile, checkpoint, steps=3).phi
            for compile in (False, True)
        ]
    assert len(calls) == fused
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-5, atol=1e-6)


def _shot(model: str, m0, h0, compile: bool, checkpoint: bool, steps: int = 4):
    """A ``steps``-step rk4 shot of ``model`` with the forward map."""
    solver = SolverOptions("rk4", steps, checkpoint=checkpoint, compile=compile, max_cfl=None)
    if model == "rdmm":
        return shoot_rdmm(m0, h0, SIGMAS, 0.06, None, solver, forward_map=True)
    if model == "lddmm":
        return shoot_lddmm(m0, SIGMAS, (0.2, 0.3, 0.5), None, solver, forward_map=True)
    return shoot_vsvf(m0, SIGMAS, (0.2, 0.3, 0.5), None, solver, forward_map=True)


@pytest.mark.parametrize(
    "model, checkpoint, shape",
    [
        ("rdmm", True, (16, 18)),
        ("rdmm", False, (16, 18)),
        ("lddmm", True, (16, 18)),
        ("vsvf", False, (16, 18)),
        # 3D: the recomputing backward saves views of a third of a tensor, which it would
        # otherwise store as compact copies (the compiled backward checks their strides)
        ("rdmm", True, (8, 10, 9)),
    ],
)
def test_compiled_shot_equals_the_eager_shot_and_its_gradients(model, checkpoint, shape):
    torch.manual_seed(0)
    m0 = 0.3 * torch.randn(1, len(shape), *shape)
    h0 = normalize_pre_weights(torch.rand(1, len(SIGMAS), *shape) + 0.1)
    probe = [torch.randn(1, len(shape), *shape) for _ in range(2)]
    results = []
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for compile in (False, True):
        m, h = m0.clone().requires_grad_(), h0.clone().requires_grad_()
        shot = _shot(model, m, h, compile, checkpoint)
        loss = (shot.phi_inv * probe[0]).sum() + (shot.phi * probe[1]).sum()
        if model == "rdmm":
            loss = loss + shot.pre_weights.square().mean()
        inputs = (m, h) if model == "rdmm" else (m,)
        results.append((shot.phi_inv, shot.phi, *torch.autograd.grad(loss, inputs)))
    assert float(results[0][2].abs().max()) > 0  # a gradient to compare
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5 * float(eager.abs().max()))


def test_compiling_without_a_cpp_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", "")
    m0 = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="solver compile needs a C\\+\\+ compiler"):
        shoot_lddmm(m0, SIGMAS, (0.2, 0.3, 0.5), None, SolverOptions(compile=True))


def test_compiling_raises_the_recompile_limit_and_never_lowers_it(monkeypatch):
    """Each grid, grad mode and dynamics class is one more compiled graph of the same function:
    dynamo's default limit of 8 ran an IXI evaluation's rdmm-opt eagerly after a network."""
    dyn, _ = _dynamics("vsvf", (8, 8))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    solver_module.compiled_dynamics(dyn)
    assert torch._dynamo.config.recompile_limit == solver_module.RECOMPILE_LIMIT > 8
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1000)
    solver_module.compiled_dynamics(dyn)
    assert torch._dynamo.config.recompile_limit == 1000


def test_compile_option_must_be_a_bool():
    with pytest.raises(ValueError, match="solver compile must be true or false"):
        SolverOptions(compile="yes")
