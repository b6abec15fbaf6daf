r"""Affine-opt: multi-scale L-BFGS over an affine pull-back map.

The map acts on domain coordinates (:mod:`rdmm_lightning.ops.grid`). It is optimised in the
centred form ``phi^{-1}(x) = (I + L)(x - c) + c + t`` (``c`` the domain centre, so rotations and
scalings turn about the image centre and the identity is ``L = 0, t = 0``) and returned as
matrices ``[A | b]`` with ``phi^{-1}(x) = A x + b``, i.e. ``A = I + L``, ``b = c + t - A c``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..ops.grid import identity_map
from ..ops.moments import center_of_mass, center_of_mass_translation
from ..ops.resample import resample_image
from ..ops.warp import warp_image
from ..registration import RegistrationResult
from .lbfgs import LbfgsOptions, run_lbfgs
from .multiscale import check_images, check_mask, make_scales, resolve_spacing
from .progress import Deadline, ProgressLine
from .similarity import SimilaritySpec, build_similarity

__all__ = [
    "AFFINE_ITERATIONS",
    "AFFINE_SIMILARITY_DEFAULTS",
    "affine_map",
    "invert_affine",
    "center_of_mass",
    "optimize_affine",
]

AFFINE_ITERATIONS: tuple[int, ...] = (60, 40, 20)
"""Default L-BFGS iterations per scale (coarse to fine) for scales (0.25, 0.5, 1.0)."""

AFFINE_SIMILARITY_DEFAULTS: dict[str, dict[str, Any]] = {"lncc": {"window": 9}}
"""Constructor arguments of named similarities unless overridden (LNCC: 9-tap box window at every
scale, i.e. a wide window relative to the coarse grids)."""


def _check_matrix(matrix: Tensor, batch: int, dim: int, name: str = "affine") -> None:
    if not isinstance(matrix, Tensor) or tuple(matrix.shape) != (batch, dim, dim + 1):
        got = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ValueError(
            f"{name} must have shape (B, D, D + 1) = {(batch, dim, dim + 1)}; got {got}"
        )


def affine_map(matrix: Tensor, shape: Sequence[int], spacing: Sequence[float]) -> Tensor:
    """The map ``x -> A x + b`` on a grid: ``matrix: (B, D, D + 1)`` -> ``(B, D, *S)``."""
    dim = len(shape)
    _check_matrix(matrix, matrix.shape[0], dim, "matrix")
    ident = identity_map(shape, spacing, dtype=matrix.dtype, device=matrix.device)
    flat = ident.flatten(2)  # (1, D, N)
    out = matrix[:, :, :dim] @ flat + matrix[:, :, dim:]
    return out.view(matrix.shape[0], dim, *shape)


def invert_affine(matrix: Tensor) -> Tensor:
    """Inverse ``[A^{-1} | -A^{-1} b]`` of affine maps ``(B, D, D + 1)``."""
    dim = matrix.shape[1]
    a_inv = torch.linalg.inv(matrix[:, :, :dim])
    return torch.cat([a_inv, -(a_inv @ matrix[:, :, dim:])], dim=2)


def _domain_centre(shape: Sequence[int], spacing: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(
        [0.5 * (n - 1) * h for n, h in zip(shape, spacing)], dtype=like.dtype, device=like.device
    )


def _to_matrix(lin: Tensor, trans: Tensor, centre: Tensor) -> Tensor:
    """Centred parameters ``(L, t)`` -> ``[A | b]`` with ``A = I + L``, ``b = c + t - A c``."""
    dim = lin.shape[1]
    a = torch.eye(dim, dtype=lin.dtype, device=lin.device) + lin
    b = centre + trans - (a @ centre.unsqueeze(-1)).squeeze(-1)
    return torch.cat([a, b.unsqueeze(-1)], dim=2)


def _from_matrix(matrix: Tensor, centre: Tensor) -> tuple[Tensor, Tensor]:
    dim = matrix.shape[1]
    a, b = matrix[:, :, :dim], matrix[:, :, dim]
    lin = a - torch.eye(dim, dtype=a.dtype, device=a.device)
    trans = b + (a @ centre.unsqueeze(-1)).squeeze(-1) - centre
    return lin, trans


def _initial_matrix(
    init: str | Tensor, source: Tensor, target: Tensor, spacing: tuple[float, ...]
) -> Tensor:
    batch, dim = source.shape[0], source.dim() - 2
    if isinstance(init, Tensor):
        _check_matrix(init, batch, dim, "init")
        return init.detach().to(dtype=source.dtype, device=source.device).clone()
    if init == "identity":
        eye = torch.eye(dim, dim + 1, dtype=source.dtype, device=source.device)
        return eye.expand(batch, dim, dim + 1).clone()
    if init == "com":
        return center_of_mass_translation(source, target, spacing)
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
    max_time: float | None = None,
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
        max_time: wall-clock limit in seconds for the whole call (None: no limit).
        progress: print a progress line per scale on stderr.
        mask: voxel weights ``(B, 1, *S)`` on the target grid for the similarity.
        lbfgs: L-BFGS settings.

    Returns:
        A :class:`RegistrationResult` with ``model="affine"``; ``affine`` is the ``(B, D, D + 1)``
        pull-back matrix ``[A | b]``, ``phi_inv`` that map on the grid, ``phi`` its inverse and
        ``warped`` the source warped once.
    """
    deadline = Deadline(max_time)
    check_images(source, target)
    mask = check_mask(mask, source)
    shape = tuple(source.shape[2:])
    spacing = resolve_spacing(shape, spacing)
    plan = make_scales(shape, spacing, scales, iterations)
    sim = build_similarity(similarity, similarity_kwargs, AFFINE_SIMILARITY_DEFAULTS)
    centre = _domain_centre(shape, spacing, source)
    matrix = _initial_matrix(init, source, target, spacing)
    lin, trans = (p.detach().clone().requires_grad_(True) for p in _from_matrix(matrix, centre))
    history: list[dict[str, Any]] = []
    stopped = None
    for level in plan:
        src = resample_image(source, level.shape)
        tgt = resample_image(target, level.shape)
        msk = None if mask is None else resample_image(mask, level.shape)

        def objective(src=src, tgt=tgt, msk=msk, level=level) -> tuple[Tensor, dict[str, float]]:
            phi_inv = affine_map(_to_matrix(lin, trans, centre), level.shape, level.spacing)
            loss = sim(warp_image(src, phi_inv, level.spacing), tgt, msk)
            return loss, {"similarity": float(loss.detach())}

        line = ProgressLine(
            f"[affine] scale {level.factor:g} {level.shape}", level.iterations, enabled=progress
        )
        outcome = run_lbfgs(
            [lin, trans],
            objective,
            level.iterations,
            deadline=deadline,
            progress=line,
            options=lbfgs,
            info={"stage": "affine", "scale": level.factor},
            where=f"affine scale {level.factor:g}, ",
        )
        history.extend(outcome.history)
        line.close(outcome.stopped)
        if outcome.stopped is not None:
            stopped = outcome.stopped
            break
    with torch.no_grad():
        matrix = _to_matrix(lin, trans, centre)
        if not bool(torch.isfinite(matrix).all()) or bool(
            (torch.linalg.det(matrix[:, :, :-1]) <= 0).any()
        ):
            note = "affine gave a degenerate matrix; fell back to the initial one"
            stopped = f"{stopped}; {note}" if stopped else note
            matrix = _initial_matrix(init, source, target, spacing)
        phi_inv = affine_map(matrix, shape, spacing)
        phi = affine_map(invert_affine(matrix), shape, spacing)
        warped = warp_image(source, phi_inv, spacing)
    return RegistrationResult(
        model="affine",
        phi_inv=phi_inv,
        warped=warped,
        spacing=spacing,
        phi=phi,
        affine=matrix,
        time_s=deadline.elapsed(),
        stopped=stopped,
        history=history,
    )
