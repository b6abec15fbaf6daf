r"""svf/lddmm/rdmm-opt: multi-scale L-BFGS over the initial momentum (and RDMM pre-weights).

At each scale the images are downsampled (anti-aliased); the parameters live on a coarser grid
(``lowres_factor``), are shot there with the model's shooting unit, the map is upsampled to the
scale's image grid and composed with the initial map, and the source is warped by it. The loss is

``similarity(source o phi^{-1}, target) + energy_weight * 1/2 <m0, v0> [+ omt_weight * OMT(w0)]``

Parameters are upsampled to the next scale; at the end the model is shot once more, the map is
brought to the full grid and the *original* source is warped once by the composed map.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..grid import Grid
from ..ops.grid import check_map
from ..ops.pre_weights import raw_from_pre_weights
from ..ops.resample import resample_image, resample_map
from ..options import Regularizer, SolverMethod, values
from ..result import RegistrationResult
from ..shooting import MODELS, SolverOptions
from . import defaults as D
from . import preweights as PW
from .budget import (
    DEFORMABLE_COST_FACTOR,
    FINAL_STEP,
    ScaleBudget,
    ScaleRecord,
    evaluation_cost,
    stop_summary,
    with_defaults,
)
from .finish import finish
from .lbfgs import LbfgsOptions, run_lbfgs
from .multiscale import (
    Scale,
    check_images,
    check_mask,
    make_scales,
)
from .objective import DeformableObjective, Parameters, make_unit
from .progress import Deadline, ProgressLine
from .similarity import SimilaritySpec, build_similarity, check_similarity

__all__ = [
    "check_deformable_options",
    "optimize_deformable",
    "planned_deformable_work",
    "REGULARIZERS",
]

REGULARIZERS = values(Regularizer)


def _check_model(model: str, regularizer: str, weight_sigma: float) -> None:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    if regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer must be one of {REGULARIZERS}; got {regularizer!r}")
    if regularizer == "predefined" and model != "rdmm":
        raise ValueError(f"regularizer='predefined' applies only to model='rdmm'; got {model!r}")
    if not weight_sigma >= 0:
        raise ValueError(f"weight_sigma must be >= 0; got {weight_sigma}")


def _check_weights(**weights: float) -> None:
    for name, val in weights.items():
        if not val >= 0:
            raise ValueError(f"{name} must be >= 0; got {val}")


def _check_h2(h2: Sequence[float], sigmas: Sequence[float]) -> None:
    if len(h2) != len(sigmas):
        raise ValueError(f"initial_h2 must have one entry per sigma ({len(sigmas)}); got {len(h2)}")


def _check_initial(
    initial_map: Tensor | None, initial_forward: Tensor | None, source: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    out = []
    for name, phi in (("initial_map", initial_map), ("initial_forward", initial_forward)):
        if phi is None:
            out.append(None)
            continue
        if not isinstance(phi, Tensor):
            raise ValueError(f"{name} must be a (B, D, *S) tensor; got {type(phi).__name__}")
        check_map(phi, name, source.shape[2:])
        if phi.shape[0] not in (1, source.shape[0]) or phi.shape[1] != source.dim() - 2:
            raise ValueError(
                f"{name} must have shape ({source.shape[0]}, {source.dim() - 2}, *S); "
                f"got {tuple(phi.shape)}"
            )
        phi = phi.detach().to(dtype=source.dtype, device=source.device)
        if not bool(torch.isfinite(phi).all()):
            raise ValueError(f"{name} contains non-finite values")
        out.append(phi.expand(source.shape[0], *phi.shape[1:]))
    if out[0] is None and out[1] is not None:
        raise ValueError("initial_forward needs initial_map (its inverse)")
    return out[0], out[1]


def _initial_params(
    model: str,
    regularizer: str,
    source: Tensor,
    sigmas: tuple[float, ...],
    pre_weights: Tensor | None,
    initial_h2: Sequence[float] | None,
    initial_map: Tensor | None,
    spacing: tuple[float, ...],
    first: Scale,
) -> tuple[Parameters, Tensor | None]:
    """Zero momentum on the first parameter grid and the RDMM pre-weights; also returns the
    source-grid pre-weights of the predefined mode (for ``sigma_t0``)."""
    batch, dim = source.shape[0], source.dim() - 2
    m = source.new_zeros(batch, dim, *first.param_shape)
    if model != "rdmm":
        if pre_weights is not None:
            raise ValueError(f"pre_weights apply only to model='rdmm'; got model={model!r}")
        return Parameters(m.requires_grad_(True)), None
    if regularizer == "predefined":
        if pre_weights is None:
            raise ValueError("regularizer='predefined' needs pre_weights of shape (B, N, *S)")
        h_src = PW.check_pre_weights(pre_weights, source, len(sigmas))
        h_frame = PW.pre_weights_in_frame(h_src, initial_map, spacing)
        return Parameters(m.requires_grad_(True), h_fixed=h_frame), h_src
    if pre_weights is not None:
        h_src = PW.check_pre_weights(pre_weights, source, len(sigmas))
        h0 = PW.at_grid(PW.pre_weights_in_frame(h_src, initial_map, spacing), first.param_shape)
    else:
        h2 = initial_h2
        if h2 is None:
            default = len(sigmas) == len(D.DEFAULT_RDMM_INITIAL_H2)
            h2 = D.DEFAULT_RDMM_INITIAL_H2 if default else (1.0,) * len(sigmas)
        _check_h2(h2, sigmas)
        h0 = PW.global_pre_weights(h2, batch, first.param_shape, source)
    x = raw_from_pre_weights(h0).requires_grad_(True)
    return Parameters(m.requires_grad_(True), x=x), None


def _resolve_sigmas(
    model: str, sigmas: Sequence[float] | None, kernel_weights: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
    if sigmas is None:
        sigmas = D.DEFAULT_RDMM_SIGMAS if model == "rdmm" else D.DEFAULT_SIGMAS
        if model != "rdmm" and kernel_weights is None:
            kernel_weights = D.DEFAULT_KERNEL_WEIGHTS
    try:
        sigmas = tuple(float(s) for s in sigmas)
    except TypeError:
        raise ValueError(f"sigmas must be a sequence of positive numbers; got {sigmas}") from None
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be a non-empty sequence of positive numbers; got {sigmas}")
    if kernel_weights is not None:
        if model == "rdmm":
            raise ValueError("kernel_weights apply to svf/lddmm; RDMM uses pre-weights")
        kernel_weights = tuple(float(w) for w in kernel_weights)
        if len(kernel_weights) != len(sigmas):
            raise ValueError(
                f"kernel_weights must have one entry per sigma ({len(sigmas)}); "
                f"got {len(kernel_weights)}"
            )
    return sigmas, kernel_weights


def optimize_deformable(
    source: Tensor,
    target: Tensor,
    model: str = "rdmm",
    *,
    spacing: Sequence[float] | None = None,
    initial_map: Tensor | None = None,
    initial_forward: Tensor | None = None,
    similarity: SimilaritySpec = "lncc",
    similarity_kwargs: Mapping[str, Any] | None = None,
    regularizer: str = "optimized",
    pre_weights: Tensor | None = None,
    sigmas: Sequence[float] | None = None,
    kernel_weights: Sequence[float] | None = None,
    initial_h2: Sequence[float] | None = None,
    weight_sigma: float = D.DEFAULT_WEIGHT_SIGMA,
    scales: Sequence[float] = (0.25, 0.5, 1.0),
    lowres_factor: float = 0.5,
    iterations: int | Sequence[int] = D.DEFAULT_ITERATIONS,
    energy_weight: float = D.DEFAULT_ENERGY_WEIGHT,
    omt_weight: float = D.DEFAULT_OMT_WEIGHT,
    solver: SolverOptions | None = None,
    max_time: float | Deadline | None = None,
    progress: bool = False,
    mask: Tensor | None = None,
    lbfgs: LbfgsOptions | None = None,
    fold_free: bool = True,
    fold_penalty: float = D.DEFAULT_FOLD_PENALTY,
) -> RegistrationResult:
    """Deformable registration of ``source`` to ``target`` (vSVF, LDDMM or RDMM) by L-BFGS.

    Args:
        source, target: images ``(B, 1, *S)`` (2D or 3D) on one working grid, values ~[0, 1].
        model: ``"rdmm"``, ``"lddmm"`` or ``"svf"``.
        spacing: domain spacing of the grid (parity when None).
        initial_map: pull-back map ``A: (B, D, *S)`` applied first (e.g. the affine result);
            the total map is ``A o psi^{-1}``.
        initial_forward: its inverse ``A^{-1}``; needed for the total forward map ``phi`` (else
            ``phi`` is None when ``initial_map`` is given) and for RDMM ``sigma_t0``.
        similarity: loss name (``"lncc"`` default, 9-tap box window; ``"mk-lncc"``, ``"ncc"``,
            ``"ssd"``, ``"mi"``) or a callable ``fn(warped, target, mask=None)``.
        similarity_kwargs: constructor arguments of a named similarity.
        regularizer: RDMM only: ``"optimized"`` (pre-weights optimised with the momentum, OMT
            penalty) or ``"predefined"`` (``pre_weights`` held fixed).
        pre_weights: RDMM pre-weights ``(B, N, *S)`` on the source grid, ``N = len(sigmas)``
            (renormalised to ``sum h^2 = 1``): fixed in predefined mode, the initial value in
            optimised mode. Paper lung setting: sigmas (0.04, 0.06, 0.08, 0.2), ``h^2`` inside
            (0.1, 0.4, 0.5, 0), outside (0, 0, 0, 1).
        sigmas: Gaussian stds (domain units). Default vSVF/LDDMM (0.015, 0.03, 0.06, 0.12) with
            ``kernel_weights`` (0.1, 0.3, 0.3, 0.3); RDMM (0.015, 0.03, 0.06, 0.12). See
            :mod:`.defaults`.
        kernel_weights: vSVF/LDDMM multi-Gaussian weights (normalised to sum 1).
        initial_h2: RDMM optimised mode without ``pre_weights``: constant initial ``h^2``
            (default (0.1, 0.3, 0.3, 0.3) for 4 sigmas, else uniform).
        weight_sigma: std of the RDMM pre-weight smoothing (default 0.05).
        scales: image scales, coarse to fine.
        lowres_factor: parameter grid relative to each scale's image grid (the coarsest scale of
            a multi-scale plan uses the image grid).
        iterations: L-BFGS iterations, one int or one per scale (default (60, 40, 20)).
        energy_weight: weight of the shooting energy ``1/2 <m0, v0>`` (default 10).
        omt_weight: weight of the OMT penalty (RDMM optimised mode; default 0.1).
        solver: shooting solver (default rk4 with 10 steps) of the finest scale; coarser
            parameter grids use proportionally fewer fixed steps (at least 4).
        max_time: wall-clock limit in seconds for the whole call, or a
            :class:`~.progress.Deadline` shared with the caller. Each scale gets a share of the
            time left (:class:`~.budget.ScaleBudget`), less a reserve for the final shoot, so
            a short budget still reaches the finest scale with fewer iterations; a scale whose
            share is used moves on to the next, the whole limit ends the optimisation. The last
            good parameters are kept and ``stopped`` says so.
        progress: print a progress line per scale on stderr.
        mask: voxel weights ``(B, 1, *S)`` on the target grid for the similarity.
        lbfgs: L-BFGS settings.
        fold_penalty: weight of the barrier ``mean((0.1 - det D phi^{-1})_+^2)`` against folds
            of the discrete map (default 100; 0 for the plain objective).
        fold_free: keep, at every scale, the best parameters whose map has no voxel with
            ``det D phi^{-1} <= 0`` on that scale's grid (the best overall if none is fold-free).
            Independently of the ``fold_penalty`` barrier, a folded iterate is never kept. The
            map of the last scale is the returned one, so a completed run is fold-free unless
            even its starting point folded. ``extras["kept"]`` lists per scale the kept
            iteration and whether it was fold-free.

    Returns:
        A :class:`RegistrationResult`: ``phi_inv`` (composed with ``initial_map``), ``phi``,
        ``warped``, RDMM ``sigma_t0``/``sigma_t1``, ``extras={"m0", "h0", "param_spacing"}``
        (parameters on their grid), ``"kept"``, ``"stages"`` (one
        :class:`~.budget.ScaleRecord` as a dict per scale) and ``"final_s"`` (the final shoot's
        seconds), ``history`` and ``stopped``.
    """
    deadline = Deadline.of(max_time)
    started = time.perf_counter()
    _check_model(model, regularizer, weight_sigma)
    check_images(source, target)
    mask = check_mask(mask, source)
    shape = tuple(source.shape[2:])
    spacing = Grid.from_domain_spacing(shape, spacing).domain_spacing
    initial_map, initial_forward = _check_initial(initial_map, initial_forward, source)
    sigmas, kernel_weights = _resolve_sigmas(model, sigmas, kernel_weights)
    _check_weights(energy_weight=energy_weight, omt_weight=omt_weight, fold_penalty=fold_penalty)
    solver = solver or SolverOptions("rk4", D.DEFAULT_NUM_STEPS)
    plan = make_scales(shape, spacing, scales, iterations, lowres_factor)
    sim = build_similarity(similarity, similarity_kwargs, D.DEFORMABLE_SIMILARITY_DEFAULTS)
    params, h_src = _initial_params(
        model, regularizer, source, sigmas, pre_weights, initial_h2, initial_map, spacing, plan[0]
    )
    use_omt = model == "rdmm" and regularizer == "optimized" and omt_weight > 0
    history: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    notes: list[str] = []
    costs = _costs(model, plan, solver)
    budget = ScaleBudget(deadline, costs, [lv.iterations for lv in plan], FINAL_STEP)
    records = [ScaleRecord(model, lv.factor, list(lv.shape), lv.iterations) for lv in plan]
    level = plan[0]
    for k, next_level in enumerate(plan):
        why = budget.too_short(k, f"{model} scale {next_level.factor:g}")
        if why is not None:  # and so are the finer scales: end at the one before
            records[k].stopped = budget.deadline.kind
            notes.append(why)
            break
        level = next_level
        params = params.to_grid(level.param_shape)
        level_solver = _solver_at(solver, level, plan[-1])
        unit = make_unit(model, sigmas, kernel_weights, weight_sigma, level_solver)
        objective = DeformableObjective(
            unit=unit,
            source=resample_image(source, level.shape),
            target=resample_image(target, level.shape),
            mask=None if mask is None else resample_image(mask, level.shape),
            initial_map=None if initial_map is None else _map_at(initial_map, level, spacing),
            level=level,
            similarity=sim,
            energy_weight=energy_weight,
            omt_weight=omt_weight if use_omt else 0.0,
            params=params,
            count_folds=fold_free,
            fold_penalty=fold_penalty,
        )
        line = ProgressLine(
            f"[{model}] scale {level.factor:g} ({k + 1}/{len(plan)}) {level.shape}",
            level.iterations,
            enabled=progress,
        )
        part = budget.part(k)
        records[k].budget_s = part.remaining()
        outcome = run_lbfgs(
            params.trainable(),
            objective,
            level.iterations,
            deadline=part,
            progress=line,
            options=lbfgs,
            info={"stage": model, "scale": level.factor},
            where=f"{model} scale {level.factor:g}, ",
            feasible=_fold_free if fold_free else None,
            need=budget.need(k),
            after=budget.after(k),
        )
        records[k].update(outcome)
        budget.record(k, outcome.evaluation_s, outcome.evaluations)
        kept.append(
            {
                "scale": level.factor,
                "iteration": outcome.kept_iteration,
                "fold_free": outcome.kept_feasible if fold_free else None,
            }
        )
        history.extend(outcome.history)
        line.close(outcome.stopped)
        if outcome.stopped is not None and outcome.reason != "time share":
            notes.append(outcome.stopped)
        if outcome.reason in ("time limit", "non-finite"):
            break
    final_start = time.perf_counter()
    result = finish(
        model, params, level, source, shape, spacing, initial_map, initial_forward, h_src,
        _solver_at(solver, level, plan[-1]), sigmas, kernel_weights, weight_sigma, started,
        stop_summary(records, notes), history, unchanged=_timed_out_unchanged(deadline, records),
    )  # fmt: skip
    result.extras.update(
        kept=kept,
        stages=[r.as_dict() for r in records],
        final_s=time.perf_counter() - final_start,
    )
    return result


def check_deformable_options(model: str, kwargs: Mapping[str, Any]) -> None:
    """Check the options of :func:`optimize_deformable` that need no images (keyword arguments
    ``kwargs``, its defaults for the rest): choices, weights, sigmas and kernel weights (the
    model's shooting unit is built once), the scale plan (a list per scale must have one entry
    per scale), the similarity's name and arguments, ``initial_h2``; raises the one-line
    ``ValueError`` the optimiser would, before any work (e.g. before an affine stage)."""
    kw = with_defaults(optimize_deformable, kwargs)
    _check_model(model, kw["regularizer"], kw["weight_sigma"])
    sigmas, kernel_weights = _resolve_sigmas(model, kw["sigmas"], kw["kernel_weights"])
    _check_weights(**{k: kw[k] for k in ("energy_weight", "omt_weight", "fold_penalty")})
    solver = kw["solver"] or SolverOptions("rk4", D.DEFAULT_NUM_STEPS)
    make_unit(model, sigmas, kernel_weights, kw["weight_sigma"], solver)  # kernels and weights
    grid = Grid.from_domain_spacing((16, 16), None)
    make_scales(grid.shape, grid.domain_spacing, kw["scales"], kw["iterations"],
                kw["lowres_factor"])  # fmt: skip
    check_similarity(kw["similarity"], kw["similarity_kwargs"], D.DEFORMABLE_SIMILARITY_DEFAULTS)
    if model == "rdmm" and kw["initial_h2"] is not None and kw["pre_weights"] is None:
        _check_h2(kw["initial_h2"], sigmas)
    if kw["max_time"] is not None:
        Deadline.of(kw["max_time"])


def planned_deformable_work(
    shape: Sequence[int], spacing: Sequence[float] | None, model: str, kwargs: Mapping[str, Any]
) -> float:
    """Cost units (:mod:`.budget`) that :func:`optimize_deformable` plans on a grid ``shape``
    with keyword arguments ``kwargs``: cost x planned iterations at each scale, plus the final
    shoot. Used to split a time limit between an affine and a deformable stage."""
    kw = with_defaults(optimize_deformable, kwargs)
    solver = kw["solver"] or SolverOptions("rk4", D.DEFAULT_NUM_STEPS)
    grid = Grid.from_domain_spacing(tuple(shape), spacing)
    plan = make_scales(grid.shape, grid.domain_spacing, kw["scales"], kw["iterations"],
                       kw["lowres_factor"])  # fmt: skip
    costs = _costs(model, plan, solver)
    return sum(c * lv.iterations for c, lv in zip(costs, plan)) + FINAL_STEP * costs[-1]


def _costs(model: str, plan: Sequence[Scale], solver: SolverOptions) -> list[float]:
    """Cost units of one evaluation at each scale (:func:`~.budget.evaluation_cost`)."""
    factor = DEFORMABLE_COST_FACTOR[model]
    steps = [_solver_at(solver, lv, plan[-1]).num_steps for lv in plan]
    return [evaluation_cost(lv.shape, lv.param_shape, n, factor) for lv, n in zip(plan, steps)]


def _timed_out_unchanged(deadline: Deadline, records: Sequence[ScaleRecord]) -> bool:
    """No iteration ran under a time limit: the final shoot would only return the starting
    point, and the time for it is not there."""
    return deadline.remaining() is not None and not any(r.iterations for r in records)


def _fold_free(terms: dict[str, float]) -> bool:
    return terms.get("neg_jacobian", 0.0) == 0.0


def _solver_at(solver: SolverOptions, level: Scale, finest: Scale) -> SolverOptions:
    """Fixed-step solvers take proportionally fewer steps (at least 4) on coarser parameter
    grids, which keeps the step size in voxels (the CFL number) about constant."""
    if solver.method not in values(SolverMethod.fixed_step()):
        return solver
    ratio = max(level.param_shape) / max(finest.param_shape)
    steps = max(min(4, solver.num_steps), round(solver.num_steps * ratio))
    return replace(solver, num_steps=steps)


def _map_at(phi: Tensor, level: Scale, spacing: tuple[float, ...]) -> Tensor:
    return resample_map(phi, level.shape, spacing, level.spacing)
