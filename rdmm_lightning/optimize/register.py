"""Affine-opt followed by a deformable model: the one-call pairwise registration."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from ..options import Model, values
from ..result import RegistrationResult
from .affine import optimize_affine, planned_affine_work
from .budget import AFFINE_MIN_SHARE, iterations_done, split_budget
from .deformable import optimize_deformable, planned_deformable_work
from .multiscale import check_images
from .progress import Deadline

__all__ = ["register_tensors", "REGISTRATION_MODELS"]

REGISTRATION_MODELS = values(Model)


def register_tensors(
    source: Tensor,
    target: Tensor,
    model: str = "rdmm",
    *,
    spacing: Sequence[float] | None = None,
    affine: bool = True,
    affine_kwargs: Mapping[str, Any] | None = None,
    **deformable_kwargs: Any,
) -> RegistrationResult:
    """Register ``source`` to ``target`` (``(B, 1, *S)`` on one working grid): affine-opt first
    (unless ``affine=False``), then the deformable ``model`` starting from the affine map.

    Args:
        source, target: images ``(B, 1, *S)``, values ~[0, 1].
        model: ``"rdmm"``, ``"lddmm"``, ``"svf"`` or ``"affine"`` (affine only).
        spacing: domain spacing of the grid (parity when None).
        affine: run affine-opt first.
        affine_kwargs: keyword arguments of :func:`~.affine.optimize_affine` (``max_time``,
            ``progress`` and ``mask`` default to the deformable ones).
        **deformable_kwargs: keyword arguments of :func:`~.deformable.optimize_deformable`;
            ``max_time`` (seconds or a :class:`~.progress.Deadline`) bounds the whole call: the
            affine stage gets the share of it that its planned work is of both stages' (at
            least :data:`~.budget.AFFINE_MIN_SHARE`), the deformable stage the rest.

    Returns:
        The deformable model's :class:`RegistrationResult` (or the affine one for
        ``model="affine"``), with ``affine`` set to the affine matrix, ``time_s`` the total time,
        ``history`` the affine records followed by the deformable ones, and ``stopped`` naming
        the stage that stopped early; ``extras["stages"]`` one record per stage and scale
        (:class:`~.budget.ScaleRecord` as dicts). A deformable stage that ran 0 iterations
        (e.g. the time limit ended before its first) returns the *affine* result, with
        ``stopped`` saying so and ``extras["requested_model"]`` the model asked for.
    """
    if model not in REGISTRATION_MODELS:
        raise ValueError(f"model must be one of {REGISTRATION_MODELS}; got {model!r}")
    if model == "affine" and not affine:
        raise ValueError("model='affine' needs affine=True")
    if affine and ("initial_map" in deformable_kwargs or "initial_forward" in deformable_kwargs):
        raise ValueError("initial_map/initial_forward cannot be combined with affine=True")
    if model == "affine" and deformable_kwargs:
        raise ValueError(
            f"model='affine' takes no deformable arguments; got {sorted(deformable_kwargs)}"
        )
    check_images(source, target)
    started = time.perf_counter()
    deadline = Deadline.of(deformable_kwargs.get("max_time"))
    aff_kwargs = dict(affine_kwargs or {})
    for key in ("progress", "mask"):
        if key in deformable_kwargs:
            aff_kwargs.setdefault(key, deformable_kwargs[key])
    aff = None
    if affine:
        if model != "affine":
            aff_kwargs["max_time"] = _affine_part(
                deadline, source, spacing, model, aff_kwargs, deformable_kwargs
            )
        aff = optimize_affine(source, target, spacing=spacing, **aff_kwargs)
        if model == "affine":
            return aff
        deformable_kwargs = dict(deformable_kwargs)
        deformable_kwargs["initial_map"] = aff.phi_inv
        deformable_kwargs["initial_forward"] = aff.phi
        deformable_kwargs["max_time"] = deadline
    result = optimize_deformable(source, target, model, spacing=spacing, **deformable_kwargs)
    if aff is not None:
        if iterations_done(result.extras["stages"], model) == 0:
            result = _affine_instead(aff, result)
        else:
            result.affine = aff.affine
            result.history = aff.history + result.history
            result.extras["affine_time_s"] = aff.time_s
            result.extras["stages"] = aff.extras["stages"] + result.extras["stages"]
            result.stopped = "; ".join(t for t in (aff.stopped, result.stopped) if t) or None
    result.time_s = time.perf_counter() - started
    return result


def _affine_part(
    deadline: Deadline,
    source: Tensor,
    spacing: Sequence[float] | None,
    model: str,
    aff_kwargs: Mapping[str, Any],
    deformable_kwargs: Mapping[str, Any],
) -> Deadline | float | None:
    """The affine stage's part of a time limit: its share of the planned work of both stages,
    at least :data:`~.budget.AFFINE_MIN_SHARE` of it (:func:`~.budget.split_budget`), within
    the caller's own affine ``max_time`` if any."""
    own = aff_kwargs.get("max_time")
    if deadline.remaining() is None:
        return own
    shape = tuple(source.shape[2:])
    works = [
        planned_affine_work(shape, spacing, aff_kwargs),
        planned_deformable_work(shape, spacing, model, deformable_kwargs),
    ]
    part = split_budget(deadline, works, floor=AFFINE_MIN_SHARE)
    return part if own is None else part.share(own)


def _affine_instead(aff: RegistrationResult, result: RegistrationResult) -> RegistrationResult:
    """A deformable stage that ran 0 iterations did not register anything: return the affine
    result (labelled so) with both stages' records, and say why in ``stopped``;
    ``extras["requested_model"]`` names the model asked for."""
    why = f" ({result.stopped})" if result.stopped else ""
    note = f"the {result.model} stage ran 0 iterations{why}"
    aff.stopped = "; ".join(t for t in (aff.stopped, note) if t)
    aff.history = aff.history + result.history
    aff.extras.update(
        stages=aff.extras["stages"] + result.extras["stages"],
        requested_model=result.model,
        affine_time_s=aff.time_s,
    )
    return aff
