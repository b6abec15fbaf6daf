"""Integration of tuple states over t in [0, 1]: solver options, torchdiffeq glue, and a
fixed-step integrator whose backward pass recomputes each step (memory O(state) per step).

``integrate`` takes the fixed-step path of this module (``_integrate_fixed``) for
``rk4``/``euler``/``midpoint`` unless ``adjoint=True``: with ``checkpoint=True`` the whole
integration is one autograd node that recomputes each step in backward, with
``checkpoint=False`` autograd records every step (plain operations on the tuple state: no
flattening into one tensor, double backward works). ``dopri5`` and the adjoint method go through
torchdiffeq's ``odeint``/``odeint_adjoint``. The fixed-step arithmetic is that of torchdiffeq's
fixed-grid solvers on the same step grid (``_StepGrid``): same forward values, gradients equal
to round-off (the tests compare all three).
With ``SolverOptions.compile`` either path evaluates the dynamics through ``torch.compile``
(:func:`compiled_dynamics`), and the fixed-step methods compile whole steps where no step is
recomputed in 2D (``_fused_step``); the engine's operators switch to their traceable variants while
dynamo traces them, so that every right-hand side becomes one fused graph.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode
from torchdiffeq import odeint, odeint_adjoint

from ..options import SolverMethod, values

__all__ = [
    "SolverOptions",
    "integrate",
    "steps_for_velocity",
    "integrate_shot",
    "compiled_dynamics",
    "FIXED_STEP_METHODS",
    "ADAPTIVE_METHODS",
    "DEFAULT_MAX_CFL",
    "MAX_STEP_FACTOR",
]

FIXED_STEP_METHODS = values(SolverMethod.fixed_step())
ADAPTIVE_METHODS = values(SolverMethod.adaptive())

State = tuple[Tensor, ...]

DEFAULT_MAX_CFL = 2.0
"""Largest Courant number ``max_d max|v_d| dt / h_d`` (voxels moved per step by the initial
velocity) a fixed-step shot may take. The maps and momenta are advected with central
differences, for which rk4 is stable up to about 2.8 (euler and midpoint never strictly); past
it the shot overflows to NaN within a few steps."""

MAX_STEP_FACTOR = 8
"""The Courant limit raises a shot's steps to at most this multiple of ``num_steps``."""

RECOMPILE_LIMIT = 64
"""Compiled shooting raises dynamo's per-function recompile limit (default 8) to at least this:
each grid, dtype, device, grad mode and dynamics class is one compiled graph of the same
function, and one process that runs a network (its shooting grid with and without gradients)
and then rdmm-opt (three scales, each with and without) passed 8, after which dynamo runs the
rest eagerly (the IXI benchmark's rdmm-opt row, tenth session)."""


@dataclass(frozen=True)
class SolverOptions:
    """How to integrate a shooting system over t in [0, 1].

    Attributes:
        method: ``"rk4"`` (default), ``"euler"``, ``"midpoint"`` (fixed steps) or ``"dopri5"``
            (adaptive).
        num_steps: number of fixed steps per unit time (fixed-step methods).
        rtol, atol: tolerances (``dopri5``).
        adjoint: integrate gradients with the adjoint method (memory O(1) in the steps).
        checkpoint: fixed-step methods without the adjoint: backward keeps only the state at
            the start of every step and recomputes each step when its gradient is needed
            (exact gradients; rk4 at 40x96x96: 1/6 of the memory of ``False`` for LDDMM and
            RDMM, 1.3x its time). ``False``: autograd keeps the graph of every step (faster,
            needed for double backward).
        max_cfl: fixed-step methods: a shot whose initial velocity would move more than
            ``max_cfl`` voxels in one step takes more steps, the fewest that keep it within,
            and an LDDMM/RDMM shot that still overflows (its velocity grew on the way) is
            repeated with twice the steps (vSVF's velocity is stationary: no repeat needed);
            at most ``MAX_STEP_FACTOR`` times ``num_steps`` (see :func:`integrate_shot`).
            ``None``: always ``num_steps``.
        compile: evaluate the right-hand side through ``torch.compile`` (inductor): its
            elementwise operations and finite differences fuse into a few kernels, forward
            and backward (same values to round-off); in 2D, with ``checkpoint=False`` and in
            shots without gradients, each whole fixed step is one graph (the stage
            combinations fuse too: a 2D rdmm-net training step 1.2x faster again). The
            first shot on a new grid, dtype or device compiles (tens of seconds on a CPU;
            inductor caches the kernels on disk), so it pays in training and over many
            pairs, not for one short shot.
    """

    method: str = "rk4"
    num_steps: int = 10
    rtol: float = 1e-5
    atol: float = 1e-5
    adjoint: bool = False
    checkpoint: bool = True
    max_cfl: float | None = DEFAULT_MAX_CFL
    compile: bool = False

    def __post_init__(self) -> None:
        if self.method not in values(SolverMethod):
            raise ValueError(
                f"solver method must be one of {values(SolverMethod)}; got {self.method!r}"
            )
        if int(self.num_steps) < 1:
            raise ValueError(f"solver num_steps must be >= 1; got {self.num_steps}")
        if self.rtol <= 0 or self.atol <= 0:
            raise ValueError(f"solver rtol/atol must be > 0; got {self.rtol}, {self.atol}")
        if not isinstance(self.checkpoint, bool):
            raise ValueError(f"solver checkpoint must be true or false; got {self.checkpoint!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"solver compile must be true or false; got {self.compile!r}")
        if self.max_cfl is not None and not (
            isinstance(self.max_cfl, (int, float)) and float(self.max_cfl) > 0
        ):
            raise ValueError(f"solver max_cfl must be a number > 0 or null; got {self.max_cfl!r}")


def steps_for_velocity(
    solver: SolverOptions, velocity: Tensor, spacing: Sequence[float]
) -> SolverOptions:
    """``solver`` with ``num_steps`` raised, if needed, so that ``velocity: (B, D, *S)`` (the
    initial velocity of a shot on a grid of domain ``spacing``) moves at most
    ``solver.max_cfl`` voxels per step: ``num_steps >= max_d max|v_d| / (h_d max_cfl)``, capped
    at ``MAX_STEP_FACTOR * num_steps``. The same options when the limit holds, for adaptive
    methods, without ``max_cfl``, or when the velocity is not finite."""
    if solver.max_cfl is None or solver.method not in FIXED_STEP_METHODS:
        return solver
    v = velocity.detach()
    speeds = [v[:, d].abs().amax() / float(h) for d, h in enumerate(spacing)]
    speed = float(torch.stack(speeds).amax())  # voxels per unit time (one host sync)
    if not math.isfinite(speed):
        return solver
    needed = min(math.ceil(speed / float(solver.max_cfl)), MAX_STEP_FACTOR * solver.num_steps)
    return solver if needed <= solver.num_steps else replace(solver, num_steps=needed)


def integrate_shot(
    dynamics: nn.Module,
    state: tuple[Tensor, ...],
    solver: SolverOptions,
    velocity0: Tensor,
    spacing: Sequence[float],
    times: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """:func:`integrate` a shot within the Courant limit ``solver.max_cfl``: with the steps of
    :func:`steps_for_velocity` for its initial velocity ``velocity0: (B, D, *S)``, then, while
    the end state is not finite, again with twice the steps (up to ``MAX_STEP_FACTOR`` times
    ``solver.num_steps``; the last attempt is returned as it is)."""
    limited = solver.max_cfl is not None and solver.method in FIXED_STEP_METHODS
    current = steps_for_velocity(solver, velocity0, spacing)
    while True:
        sol = integrate(dynamics, state, current, times)
        if not limited or 2 * current.num_steps > MAX_STEP_FACTOR * solver.num_steps:
            return sol
        ends = torch.stack([torch.isfinite(x[-1]).all() for x in sol])
        if bool(ends.all()):  # one host sync per shot
            return sol
        current = replace(current, num_steps=2 * current.num_steps)


def compiled_dynamics(dynamics: nn.Module, device: torch.device | None = None) -> nn.Module:
    """``dynamics`` with its forward through ``torch.compile`` (static shapes; dynamo keeps one
    compiled graph per grid, dtype and device and reuses it for every instance of the same
    class). Its ``_orig_mod`` is ``dynamics``.

    Raises dynamo's recompile limit to :data:`RECOMPILE_LIMIT` (never lowers it).

    Raises:
        ValueError: on a CPU ``device`` without a C++ compiler (inductor builds its CPU kernels
            with one), before any compiling starts.
    """
    if isinstance(dynamics, torch._dynamo.eval_frame.OptimizedModule):
        return dynamics
    if (device is None or device.type == "cpu") and not _cpp_compiler():
        raise ValueError(
            "solver compile needs a C++ compiler on the CPU (torch.compile builds its kernels "
            "with it; install g++ or set CXX), or set solver compile to false"
        )
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(dynamics, dynamic=False)


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would use (``CXX``, else ``g++``, ``c++`` or ``clang++`` on
    the PATH), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for path in map(shutil.which, names) if path), None)


class _StepGrid:
    """Fixed-step grid: ``round(num_steps * |t1 - t0|)`` equal steps between the first and last
    requested time (works for the reversed integration of the adjoint too)."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps

    def __call__(self, func, y0, t: Tensor) -> Tensor:
        span = float(t[-1] - t[0])
        n = max(1, round(self.num_steps * abs(span)))
        grid = torch.linspace(float(t[0]), float(t[-1]), n + 1, dtype=t.dtype, device=t.device)
        if t.numel() <= 2:
            return grid
        # put the requested output times on the grid so outputs are not interpolated
        vals = torch.cat([grid, t[1:-1]]).sort(descending=span < 0).values
        keep = torch.ones_like(vals, dtype=torch.bool)
        keep[1:] = (vals[1:] - vals[:-1]).abs() > 1e-9 * abs(span)
        return vals[keep]


def integrate(
    dynamics: nn.Module,
    state: tuple[Tensor, ...],
    solver: SolverOptions,
    times: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """Integrate ``d state / dt = dynamics(t, state)`` from t = 0 to 1.

    Returns a tuple of tensors with a leading time dimension: the states at ``times``
    (default ``[0, 1]``).
    """
    ref = state[0]
    t = (
        torch.tensor([0.0, 1.0], dtype=ref.dtype, device=ref.device)
        if times is None
        else times.to(dtype=ref.dtype, device=ref.device)
    )
    fixed = solver.method in FIXED_STEP_METHODS
    if solver.compile:
        dynamics = compiled_dynamics(dynamics, ref.device)
    if fixed and not solver.adjoint:
        return _integrate_fixed(
            dynamics, tuple(state), t, solver.method, solver.num_steps, solver.checkpoint
        )
    kwargs: dict = {"method": solver.method}
    if fixed:
        kwargs["options"] = {"grid_constructor": _StepGrid(solver.num_steps)}
    else:
        kwargs["rtol"] = solver.rtol
        kwargs["atol"] = solver.atol
    if solver.adjoint:
        return odeint_adjoint(dynamics, state, t, adjoint_params=(), **kwargs)
    return odeint(dynamics, state, t, **kwargs)


# ---------------------------------------------------------------------------------------------
# Fixed-step methods with the arithmetic of torchdiffeq's fixed-grid solvers, expression by
# expression ("rk4" is its 3/8-rule variant ``rk4_alt_step_func``), so that both paths give the
# same values. A method is a generator: it yields each stage's ``(time, state)``, is sent the
# rate there, and returns the end state. Its Butcher tableau (``a`` strictly below the diagonal,
# ``b``) states the same linear combinations: the backward pass applies their transposes.

_ONE_THIRD = 1 / 3
_TWO_THIRDS = 2 / 3

StepMethod = Callable[
    [Tensor, Tensor, Tensor, State], Generator[tuple[Tensor, State], State, State]
]


def _euler(t0: Tensor, dt: Tensor, t1: Tensor, y0: State):
    k1 = yield t0, y0
    return tuple(a + dt * b for a, b in zip(y0, k1))


def _midpoint(t0: Tensor, dt: Tensor, t1: Tensor, y0: State):
    half_dt = 0.5 * dt
    k1 = yield t0, y0
    k2 = yield t0 + half_dt, tuple(a + b * half_dt for a, b in zip(y0, k1))
    return tuple(a + dt * b for a, b in zip(y0, k2))


def _rk4(t0: Tensor, dt: Tensor, t1: Tensor, y0: State):
    """Kutta's 3/8 rule."""
    k1 = yield t0, y0
    k2 = yield t0 + dt * _ONE_THIRD, tuple(a + dt * b * _ONE_THIRD for a, b in zip(y0, k1))
    y = tuple(a + dt * (c - b * _ONE_THIRD) for a, b, c in zip(y0, k1, k2))
    k3 = yield t0 + dt * _TWO_THIRDS, y
    k4 = yield t1, tuple(a + dt * (b - c + d) for a, b, c, d in zip(y0, k1, k2, k3))
    return tuple(
        a + (b + 3 * (c + d) + e) * dt * 0.125 for a, b, c, d, e in zip(y0, k1, k2, k3, k4)
    )


@dataclass(frozen=True)
class _Method:
    stages: StepMethod
    a: tuple[tuple[float, ...], ...]  # a[i][j]: weight of dt * k_j in the input of stage i
    b: tuple[float, ...]  # b[i]: weight of dt * k_i in the end state


_METHODS = {
    SolverMethod.EULER: _Method(_euler, ((),), (1.0,)),
    SolverMethod.MIDPOINT: _Method(_midpoint, ((), (0.5,)), (0.0, 1.0)),
    SolverMethod.RK4: _Method(
        _rk4,
        ((), (_ONE_THIRD,), (-_ONE_THIRD, 1.0), (1.0, -1.0, 1.0)),
        (0.125, 0.375, 0.375, 0.125),
    ),
}

# Stages whose graph the backward pass records while it recomputes the stage inputs (and keeps
# until it reaches them); the later stages are evaluated once without a graph there and once
# with one when their turn comes. rk4, 10 steps, float32, fwd+bwd against checkpoint=False:
# 0 (one graph at a time, 3 extra evaluations per step): LDDMM 40x96x96 peak 0.40 GB, time
# 1.68x / 1.54x (LDDMM / RDMM, 32x64x64, 1 thread); 1 (two graphs, 2 extra): 0.46 GB (RDMM
# 0.87 GB), 1.49x / 1.34x, 1.32x / 1.32x at 40x96x96; 3 (the whole step): 0.66 GB, 1.36x / 1.23x.
# 1 is the cheapest that keeps LDDMM <= 0.5 GB and RDMM <= 1 GB (issue 12).
_KEPT_STAGE_GRAPHS = 1


def _step(method: _Method, func: Callable, t0: Tensor, dt: Tensor, t1: Tensor, y0: State):
    """One step ``y0 -> y1`` (runs in the caller's grad mode)."""
    gen = method.stages(t0, dt, t1, y0)
    t, y = next(gen)
    while True:
        try:
            t, y = gen.send(tuple(func(t, y)))
        except StopIteration as stop:
            return stop.value


_FUSED_STEP_DIMS = (2,)
"""Spatial dimensions whose compiled shots compile whole steps (:func:`_fused_step`). 2D:
rdmm-net training step 1.19x / 1.26x faster (2 / 1 threads, 128x128); 3D: compiling one
rk4 step of RDMM at 32x40x40 took ~150 s (1 thread) and the refinement of a brain pair was
not faster (26.5 against 26.7 s), so 3D compiles the right-hand side alone."""


@functools.cache
def _compiled_step() -> Callable:
    """:func:`_step` through ``torch.compile`` (static shapes), built once: one graph per
    step, the stages' right-hand sides and the combinations between them fused forward and
    backward."""
    return torch.compile(_step, dynamic=False)


def _fused_step(method: _Method, func: Callable, t0: Tensor, dt: Tensor, t1: Tensor, y0: State):
    """:func:`_step` compiled as a whole for a compiled ``func`` (its ``_orig_mod`` is traced
    inside the step's graph)."""
    return _compiled_step()(method, func._orig_mod, t0, dt, t1, y0)


def _stage_inputs(method: _Method, func: Callable, t0, dt, t1, y0: State, keep: int) -> list:
    """``[(time, state, rate or None)]`` of every stage (one evaluation fewer than a step).
    The first ``keep`` stages are evaluated with a graph on leaf copies of their states (the
    returned state) and come with their rate; the others without one."""
    gen = method.stages(t0, dt, t1, y0)
    t, y = next(gen)
    stages: list = []
    while len(stages) < len(method.b) - 1:
        if len(stages) < keep:
            y = _leaves(y)
            with torch.enable_grad(), _compact_saved_views(func):
                k = tuple(func(t, y))
            stages.append((t, y, k))
            k = tuple(x.detach() for x in k)
        else:
            stages.append((t, y, None))
            with torch.no_grad():
                k = tuple(func(t, y))
        t, y = gen.send(k)
    gen.close()
    stages.append((t, y, None))
    return stages


def _leaves(y: State) -> State:
    return tuple(x.detach().requires_grad_() for x in y)


def _step_vjp(
    method: _Method,
    func: Callable,
    t0: Tensor,
    t1: Tensor,
    y0: State,
    grad_y: list[Tensor],
    captured: list[Tensor],
    grad_captured: list[Tensor],
) -> None:
    """Back-propagates one step ``y0 -> y1`` in place: ``grad_y`` holds the gradient w.r.t.
    ``y1`` on entry and w.r.t. ``y0`` on return; the gradients w.r.t. ``captured`` are added to
    ``grad_captured``. The stages are taken in reverse, each evaluated with a graph (or taken
    from the recomputation of the stage inputs), back-propagated and dropped; the linear
    combinations between stages are transposed with the Butcher tableau."""
    dt = float(t1 - t0)
    stages = _stage_inputs(method, func, t0, t1 - t0, t1, y0, _KEPT_STAGE_GRAPHS)
    # grad_k[i][e]: gradient w.r.t. the rate of state entry e at stage i (None: zero)
    grad_k = [[None if b == 0 else g * (dt * b) for g in grad_y] for b in method.b]
    n = len(y0)
    for i in reversed(range(len(stages))):
        (t, y, k), stages[i] = stages[i], None
        pairs = [(e, g) for e, g in enumerate(grad_k[i]) if g is not None]
        grad_k[i] = None
        if k is None and pairs:
            y = _leaves(y)
            with torch.enable_grad(), _compact_saved_views(func):
                k = tuple(func(t, y))
        pairs = [(k[e], g) for e, g in pairs if k[e].requires_grad]
        if not pairs:
            continue
        found = torch.autograd.grad(
            [o for o, _ in pairs], y + tuple(captured), [g for _, g in pairs], allow_unused=True
        )
        del k, pairs
        for acc, g in zip(grad_y + grad_captured, found):
            if g is not None:
                acc.add_(g)
        for j, a in enumerate(method.a[i]):
            for e, g in enumerate(found[:n]):
                if a == 0 or g is None:
                    continue
                if grad_k[j][e] is None:
                    grad_k[j][e] = g * (dt * a)
                else:
                    grad_k[j][e].add_(g, alpha=dt * a)
        del found


def _forward_pass(
    method: _Method,
    func: Callable,
    grid: Tensor,
    t: Tensor,
    state: State,
    step: Callable = _step,
) -> tuple[State, list[State], list[tuple[int, float]]]:
    """Steps over ``grid`` in the caller's grad mode, each by ``step`` (:func:`_step` or
    :func:`_fused_step`). Returns the states at ``t`` stacked per entry, the state at the start
    of every step, and for every output time the step ``k`` it falls in and its weight ``s``:
    ``output = y_k + s (y_{k+1} - y_k)``."""
    sign = 1.0 if t.numel() < 2 or t[1] > t[0] else -1.0
    outputs = [[y] for y in state]
    places = [(0, 0.0)]
    starts = []
    y0, j = state, 1
    for k in range(grid.numel() - 1):
        t0, t1 = grid[k], grid[k + 1]
        starts.append(y0)
        if torch.is_grad_enabled():  # the graph keeps the step's temporaries anyway
            y1 = step(method, func, t0, t1 - t0, t1, y0)
        else:
            # allocated before the step's temporaries, the new state does not split the holes
            # they leave, so that the next step reuses them (glibc's heap grows less)
            y1 = [torch.empty_like(y) for y in y0]
            for o, y in zip(y1, step(method, func, t0, t1 - t0, t1, y0)):
                o.copy_(y)
        while j < t.numel() and (t1 - t[j]) * sign >= 0:
            for out, a, b in zip(outputs, y0, y1):
                out.append(_interpolate(t0, t1, a, b, t[j]))
            s = 0.0 if t[j] == t0 else 1.0 if t[j] == t1 else float((t[j] - t0) / (t1 - t0))
            places.append((k, s))
            j += 1
        y0 = tuple(y1)
    return tuple(torch.stack(o) for o in outputs), starts, places


class _Trajectory(torch.autograd.Function):
    """The fixed-step integration as one autograd node that keeps only the state at the start
    of every step (and what the dynamics captured) for backward, and back-propagates step by
    step in reverse, recomputing each (:func:`_step_vjp`).

    Tensor inputs: the ``n`` state entries, then the tensors requiring grad that the dynamics
    uses without receiving them (their gradients are returned too). Outputs: the states at the
    requested times, ``(T, *shape)`` per entry. One node for the whole integration: a node per
    step makes autograd allocate small objects between the steps' temporaries, which fragments
    glibc's heap (+9 MB resident per step at 40x96x96 LDDMM)."""

    @staticmethod
    def forward(ctx, method, func, grid, t, n: int, *tensors: Tensor):  # type: ignore[override]
        outputs, starts, places = _forward_pass(method, func, grid, t, tensors[:n])
        ctx.save_for_backward(*(x for y in starts for x in y), *tensors[n:])
        ctx.method, ctx.func, ctx.grid, ctx.places, ctx.n = method, func, grid, places, n
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_out: Tensor | None):  # type: ignore[override]
        saved, n = ctx.saved_tensors, ctx.n
        steps = ctx.grid.numel() - 1
        starts = [saved[k * n : (k + 1) * n] for k in range(steps)]
        need = ctx.needs_input_grad[5:]
        wanted = [c for c in range(n, len(need)) if need[c]]
        captured = [saved[steps * n + c - n] for c in wanted]
        grad_y = [torch.zeros_like(y) for y in starts[0]]
        grad_captured = [torch.zeros_like(x) for x in captured]
        at_start: dict[int, list[tuple[int, float]]] = {}  # step start -> (output, weight)
        for j, (k, s) in enumerate(ctx.places):
            if s != 1:
                at_start.setdefault(k, []).append((j, 1 - s))
            if s != 0:
                at_start.setdefault(k + 1, []).append((j, s))

        def add_outputs(k: int) -> None:
            for j, w in at_start.get(k, ()):
                for acc, g in zip(grad_y, grad_out):
                    if g is not None:
                        acc.add_(g[j], alpha=w)

        add_outputs(steps)
        for k in reversed(range(steps)):
            t0, t1 = ctx.grid[k], ctx.grid[k + 1]
            _step_vjp(ctx.method, ctx.func, t0, t1, starts[k], grad_y, captured, grad_captured)
            add_outputs(k)
        grads = [g if nd else None for g, nd in zip(grad_y, need[:n])]
        extra: list[Tensor | None] = [None] * (len(need) - n)
        for c, g in zip(wanted, grad_captured):
            extra[c - n] = g
        return (None,) * 5 + tuple(grads) + tuple(extra)


def _compact(x: Tensor) -> Tensor:
    """A tensor that views less than half of its storage, as a compact copy: saved this way
    for the backward of a recomputed stage, it does not keep the storage alive (e.g. the exact
    FFT smoothing returns crops of its zero-padded output, 3.5x their size at 40x96x96)."""
    if x.untyped_storage().nbytes() > 2 * x.numel() * x.element_size():
        return x.clone(memory_format=torch.contiguous_format)
    return x


def _compact_saved_views(func: Callable) -> contextlib.AbstractContextManager:
    """Saved tensors go through :func:`_compact`; not for a compiled ``func``, whose backward
    expects its saved tensors with the strides they had (a compact copy of a view fails its
    stride check)."""
    if isinstance(func, torch._dynamo.eval_frame.OptimizedModule):
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(_compact, _unpack)


def _unpack(x: Tensor) -> Tensor:
    return x


class _GradTensorsUsed(TorchFunctionMode):
    """Collects the tensors that require grad and enter a torch operation without having been
    produced inside the mode. Under ``no_grad`` with a state that does not require grad, these
    are the tensors the dynamics captured (e.g. the velocity of vSVF, parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[int, Tensor] = {}
        self._produced: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for x in _tensors_in((args, kwargs)):
            if x.requires_grad and id(x) not in self._produced:
                self.found.setdefault(id(x), x)
        out = func(*args, **kwargs)
        self._produced.update(id(x) for x in _tensors_in(out))
        return out


def _tensors_in(tree) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [x for item in tree for x in _tensors_in(item)]
    if isinstance(tree, dict):
        return [x for item in tree.values() for x in _tensors_in(item)]
    return []


def _captured_grad_tensors(func: Callable, t0: Tensor, state: State) -> tuple[Tensor, ...]:
    """Tensors requiring grad that ``func`` uses besides its arguments, found by one evaluation
    without a graph at ``t0`` (the dynamics must use the same ones at every call)."""
    probe = _GradTensorsUsed()
    func = getattr(func, "_orig_mod", func)  # eagerly: a mode does not trace into compiled code
    with torch.no_grad(), probe:
        func(t0, tuple(y.detach() for y in state))
    return tuple(probe.found.values())


def _integrate_fixed(
    dynamics: Callable,
    state: State,
    t: Tensor,
    method: str,
    num_steps: int,
    checkpoint: bool = True,
) -> State:
    """Fixed steps on the :class:`_StepGrid` of ``t: (T,)``; returns the states at ``t``, each
    ``(T, *shape)``. When gradients are recorded with ``checkpoint``, the integration is one
    :class:`_Trajectory` node: backward holds the state at every step start plus the graphs of
    two stages; without ``checkpoint`` autograd records every step. A compiled ``dynamics``
    (:func:`compiled_dynamics`) is compiled with whole steps there and without a graph
    (:func:`_fused_step`); the recomputing node evaluates it stage by stage."""
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"times must be a 1-D tensor of output times; got shape {tuple(t.shape)}")
    if t.numel() == 1:
        return tuple(y.unsqueeze(0).clone() for y in state)
    sign = 1.0 if t[1] > t[0] else -1.0
    if not bool(((t[1:] - t[:-1]) * sign > 0).all()):
        raise ValueError(f"times must be strictly increasing or decreasing; got {t.tolist()}")
    grid = _StepGrid(num_steps)(dynamics, state, t)
    steps = _METHODS[method]
    fused = isinstance(dynamics, torch._dynamo.eval_frame.OptimizedModule)
    step = _fused_step if fused and state[0].dim() - 2 in _FUSED_STEP_DIMS else _step
    if torch.is_grad_enabled() and not checkpoint:
        return _forward_pass(steps, dynamics, grid, t, state, step)[0]
    if torch.is_grad_enabled():
        captured = _captured_grad_tensors(dynamics, grid[0], state)
        if captured or any(y.requires_grad for y in state):
            return _Trajectory.apply(steps, dynamics, grid, t, len(state), *state, *captured)
    with torch.no_grad():
        return _forward_pass(steps, dynamics, grid, t, state, step)[0]


def _interpolate(t0: Tensor, t1: Tensor, y0: Tensor, y1: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation inside one step (exact at the end points)."""
    if t == t0:
        return y0
    if t == t1:
        return y1
    return y0 + (t - t0) / (t1 - t0) * (y1 - y0)
