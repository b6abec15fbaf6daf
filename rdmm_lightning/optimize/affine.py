r"""Affine-opt: multi-scale L-BFGS over an affine pull-back map.

The map acts on domain coordinates (:mod:`rdmm_lightning.ops.grid`). It is optimised in the
centred form ``phi^{-1}(x) = (I + L)(x - c) + c + t`` (``c`` the domain centre, so rotations and
scalings turn about the image centre and the identity is ``L = 0, t = 0``) and returned as
matrices ``[A | b]`` with ``phi^{-1}(x) = A x + b``, i.e. ``A = I + L``, ``b = c + t - A c``
(:mod:`rdmm_lightning.ops.affine`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..grid import Grid
from ..ops.affine import (
    affine_to_map,
    check_affine,
    domain_centre,
    identity_affine,
    invert_affine,
    matrix_from_params,
    params_from_matrix,
)
from ..ops.moments import center_of_mass, center_of_mass_translation
from ..ops.resample import resample_image
from ..ops.warp import warp_image
from ..options import AffineInit, values
from ..result import RegistrationResult
from .budget import (
    FINAL_STEP,
    ScaleBudget,
    ScaleRecord,
    evaluation_cost,
    stop_summary,
    with_defaults,
)
from .lbfgs import LbfgsOptions, run_lbfgs
from .multiscale import check_images, check_mask, make_scales
from .progress import Deadline, ProgressLine
from .similarity import SimilaritySpec, build_similarity, check_similarity

__all__ = [
    "AFFINE_ITERATIONS",
    "AFFINE_SIMILARITY_DEFAULTS",
    "center_of_mass",
    "check_affine_options",
    "optimize_affine",
    "planned_affine_work",
]

AFFINE_ITERATIONS: tuple[int, ...] = (60, 40, 20)
"""Default L-BFGS iterations per scale (coarse to fine) for scales (0.25, 0.5, 1.0)."""

AFFINE_SIMILARITY_DEFAULTS: dict[str, dict[str, Any]] = {"lncc": {"window": 9}}
"""Constructor arguments of named similarities unless overridden (LNCC: 9-tap box window at every
scale, i.e. a wide window relative to the coarse grids)."""


def _initial_matrix(
    init: str | Tensor, source: Tensor, target: Tensor, spacing: tuple[float, ...]
) -> Tensor:
    batch, dim = source.shape[0], source.dim() - 2
    if isinstance(init, Tensor):
        check_affine(init, "init", batch=batch, dim=dim)
        return init.detach().to(dtype=source.dtype, device=source.device).clone()
    if init == "identity":
        return identity_affine(batch, dim, source)
    _check_init(init)
    return center_of_mass_translation(source, target, spacing)


def _check_init(init: object) -> None:
    if init not in values(AffineInit):
        raise ValueError(f"init must be 'com', 'identity' or a (B, D, D + 1) tensor; got {init!r}")


def optimize_affine(
    source: Tensor,
    target: Tensor,
    *,
    spacing: Sequence[float] | None = None,
    similarity: SimilaritySpec = "lncc",
    similarity_kwargs: Mapping[str, Any] | None = None,
    scales: Sequence[float] = (0.25, 0.5, 1.0),
    iterations: int | Sequence[int] = AFFINE_ITERATIONS,
    init: str | Tensor = "com",
    max_time: float | Deadline | None = None,
    progress: bool = False,
    mask: Tensor | None = None,
    lbfgs: LbfgsOptions | None = None,
) -> RegistrationResult:
    """Affine registration of ``source`` to ``target`` by multi-scale L-BFGS.

    Args:
        source, target: images ``(B, 1, *S)`` (2D or 3D, same working grid), values ~[0, 1].
        spacing: domain spacing of the grid (parity when None).
        similarity: loss name (``"lncc"`` default, 9-tap box window; ``"mk-lncc"``, ``"ncc"``,
            ``"ssd"``, ``"mi"``) or a callable ``fn(warped, target, mask=None)``.
        similarity_kwargs: constructor arguments of a named similarity.
        scales: image scales, coarse to fine; images are downsampled with anti-aliasing.
        iterations: L-BFGS iterations, one int for all scales or one per scale
            (default :data:`AFFINE_ITERATIONS`).
        init: ``"com"`` (translate the target's intensity centre of mass onto the source's),
            ``"identity"``, or a ``(B, D, D + 1)`` pull-back matrix.
        max_time: wall-clock limit in seconds for the whole call (None: no limit), or a
            :class:`~.progress.Deadline` shared with the caller; each scale gets a share of it
            (:class:`~.budget.ScaleBudget`).
        progress: print a progress line per scale on stderr.
        mask: voxel weights ``(B, 1, *S)`` on the target grid for the similarity.
        lbfgs: L-BFGS settings.

    Returns:
        A :class:`RegistrationResult` with ``model="affine"``; ``affine`` is the ``(B, D, D + 1)``
        pull-back matrix ``[A | b]``, ``phi_inv`` that map on the grid, ``phi`` its inverse and
        ``warped`` the source warped once; ``extras["stages"]`` one
        :class:`~.budget.ScaleRecord` (as a dict) per scale.
    """
    deadline = Deadline.of(max_time)
    started = time.perf_counter()
    check_images(source, target)
    mask = check_mask(mask, source)
    shape = tuple(source.shape[2:])
    spacing = Grid.from_domain_spacing(shape, spacing).domain_spacing
    plan = make_scales(shape, spacing, scales, iterations)
    sim = build_similarity(similarity, similarity_kwargs, AFFINE_SIMILARITY_DEFAULTS)
    centre = domain_centre(shape, spacing, source)
    matrix = _initial_matrix(init, source, target, spacing)
    params = params_from_matrix(matrix, centre).detach().clone().requires_grad_(True)
    history: list[dict[str, Any]] = []
    notes: list[str] = []
    costs = [evaluation_cost(level.shape) for level in plan]
    budget = ScaleBudget(deadline, costs, [level.iterations for level in plan], FINAL_STEP)
    records = [ScaleRecord("affine", lv.factor, list(lv.shape), lv.iterations) for lv in plan]
    for stage, level in enumerate(plan, start=1):
        why = budget.too_short(stage - 1, f"affine scale {level.factor:g}")
        if why is not None:  # and so are the finer scales
            records[stage - 1].stopped = budget.deadline.kind
            notes.append(why)
            break
        src = resample_image(source, level.shape)
        tgt = resample_image(target, level.shape)
        msk = None if mask is None else resample_image(mask, level.shape)

        def objective(src=src, tgt=tgt, msk=msk, level=level) -> tuple[Tensor, dict[str, float]]:
            phi_inv = affine_to_map(matrix_from_params(params, centre), level.shape, level.spacing)
            loss = sim(warp_image(src, phi_inv, level.spacing), tgt, msk)
            return loss, {"similarity": float(loss.detach())}

        line = ProgressLine(
            f"[affine] scale {level.factor:g} ({stage}/{len(plan)}) {level.shape}",
            level.iterations,
            enabled=progress,
        )
        part = budget.part(stage - 1)
        records[stage - 1].budget_s = part.remaining()
        outcome = run_lbfgs(
            [params],
            objective,
            level.iterations,
            deadline=part,
            progress=line,
            options=lbfgs,
            info={"stage": "affine", "scale": level.factor},
            where=f"affine scale {level.factor:g}, ",
            need=budget.need(stage - 1),
            after=budget.after(stage - 1),
        )
        records[stage - 1].update(outcome)
        budget.record(stage - 1, outcome.evaluation_s, outcome.evaluations)
        history.extend(outcome.history)
        line.close(outcome.stopped)
        if outcome.stopped is not None and outcome.reason != "time share":
            notes.append(outcome.stopped)
        if outcome.reason in ("time limit", "non-finite"):
            break
    stopped = stop_summary(records, notes)
    with torch.no_grad():
        matrix = matrix_from_params(params, centre)
        if not bool(torch.isfinite(matrix).all()) or bool(
            (torch.linalg.det(matrix[:, :, :-1]) <= 0).any()
        ):
            note = "affine gave a degenerate matrix; fell back to the initial one"
            stopped = f"{stopped}; {note}" if stopped else note
            matrix = _initial_matrix(init, source, target, spacing)
        phi_inv = affine_to_map(matrix, shape, spacing)
        phi = affine_to_map(invert_affine(matrix), shape, spacing)
        warped = warp_image(source, phi_inv, spacing)
    return RegistrationResult(
        model="affine",
        phi_inv=phi_inv,
        warped=warped,
        spacing=spacing,
        phi=phi,
        affine=matrix,
        time_s=time.perf_counter() - started,
        stopped=stopped,
        history=history,
        extras={"stages": [r.as_dict() for r in records]},
    )


def check_affine_options(kwargs: Mapping[str, Any]) -> None:
    """Check the options of :func:`optimize_affine` that need no images (keyword arguments
    ``kwargs``, its defaults for the rest): the scale plan, the similarity's name and
    arguments, ``init``; raises the one-line ``ValueError`` the optimiser would, before any
    work."""
    kw = with_defaults(optimize_affine, kwargs)
    grid = Grid.from_domain_spacing((16, 16), None)
    make_scales(grid.shape, grid.domain_spacing, kw["scales"], kw["iterations"])
    check_similarity(kw["similarity"], kw["similarity_kwargs"], AFFINE_SIMILARITY_DEFAULTS)
    if not isinstance(kw["init"], Tensor):
        _check_init(kw["init"])
    if kw["max_time"] is not None:
        Deadline.of(kw["max_time"])


def planned_affine_work(
    shape: Sequence[int], spacing: Sequence[float] | None, kwargs: Mapping[str, Any]
) -> float:
    """Cost units (:mod:`.budget`) that :func:`optimize_affine` plans on a grid ``shape`` with
    keyword arguments ``kwargs``: image voxels x planned iterations at each scale, plus the
    final warp."""
    kw = with_defaults(optimize_affine, kwargs)
    grid = Grid.from_domain_spacing(tuple(shape), spacing)
    plan = make_scales(grid.shape, grid.domain_spacing, kw["scales"], kw["iterations"])
    costs = [evaluation_cost(level.shape) for level in plan]
    return sum(c * lv.iterations for c, lv in zip(costs, plan)) + FINAL_STEP * costs[-1]
