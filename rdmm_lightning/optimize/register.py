"""Affine-opt followed by a deformable model: the one-call pairwise registration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from ..registration import RegistrationResult
from .affine import optimize_affine
from .deformable import optimize_deformable
from .multiscale import check_images
from .progress import Deadline

__all__ = ["register_tensors", "REGISTRATION_MODELS"]

REGISTRATION_MODELS = ("rdmm", "lddmm", "svf", "affine")


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
            ``max_time`` bounds the whole call (affine included; when the affine stage uses it
            up, the deformable stage returns its starting point composed with the affine map).

    Returns:
        The deformable model's :class:`RegistrationResult` (or the affine one for
        ``model="affine"``), with ``affine`` set to the affine matrix, ``time_s`` the total time,
        ``history`` the affine records followed by the deformable ones, and ``stopped`` naming
        the stage that stopped early.
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
    deadline = Deadline(deformable_kwargs.get("max_time"))
    aff_kwargs = dict(affine_kwargs or {})
    for key in ("progress", "mask"):
        if key in deformable_kwargs:
            aff_kwargs.setdefault(key, deformable_kwargs[key])
    if deadline.max_time is not None:
        aff_kwargs["max_time"] = min(deadline.max_time, aff_kwargs.get("max_time") or float("inf"))
    aff = None
    if affine:
        aff = optimize_affine(source, target, spacing=spacing, **aff_kwargs)
        if model == "affine":
            return aff
        deformable_kwargs = dict(deformable_kwargs)
        deformable_kwargs["initial_map"] = aff.phi_inv
        deformable_kwargs["initial_forward"] = aff.phi
        if deadline.max_time is not None:
            deformable_kwargs["max_time"] = max(deadline.remaining() or 0.0, 1e-3)
    result = optimize_deformable(source, target, model, spacing=spacing, **deformable_kwargs)
    if aff is not None:
        result.affine = aff.affine
        result.history = aff.history + result.history
        result.extras["affine_time_s"] = aff.time_s
        if aff.stopped is not None:
            result.stopped = (
                aff.stopped if result.stopped is None else (f"{aff.stopped}; {result.stopped}")
            )
    result.time_s = deadline.elapsed()
    return result
