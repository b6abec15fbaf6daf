r"""Affine pull-back maps in domain coordinates: parametrisation, composition, inversion.

An affine map is stored as matrices ``M = [A | b]: (B, D, D + 1)`` with ``x -> A x + b`` acting on
domain coordinates (:mod:`rdmm_lightning.ops.grid`), the form of
:attr:`rdmm_lightning.result.RegistrationResult.affine`. Networks and the affine optimiser
work with the *centred* parameters ``(L, t)`` of ``x -> (I + L)(x - c) + c + t`` (``c`` the
domain centre), so rotations and scalings turn about the image centre and zero parameters are
the identity.

Composition order for pull-back maps. If ``T`` is the pull-back map so far (target -> source)
and a network, looking at ``source o T`` and the target, predicts the pull-back ``Delta`` that
aligns ``source o T`` with the target, then ``source o T o Delta ~ target``: the new total is
``T o Delta``, i.e. ``x -> T(Delta(x))``. After K steps ``phi^{-1}(x) = A_1(A_2(...A_K(x)))``
and in matrices ``[A | b] o [A' | b'] = [A A' | A b' + b]`` (:func:`compose_affine`). The
reference code multiplies the other way round (reference-notes.md §4.1), which is only right
when the steps commute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .grid import identity_map

__all__ = [
    "affine_deviation",
    "affine_to_map",
    "check_affine",
    "compose_affine",
    "domain_centre",
    "identity_affine",
    "invert_affine",
    "matrix_from_params",
    "params_from_matrix",
]


def check_affine(
    matrix: Tensor, name: str = "matrix", *, batch: int | None = None, dim: int | None = None
) -> int:
    """Check that ``matrix`` is ``(B, D, D + 1)`` with D in (2, 3) (and the given ``batch``/``dim``
    when set); returns D."""
    ok = isinstance(matrix, Tensor) and matrix.dim() == 3
    ok = ok and matrix.shape[2] == matrix.shape[1] + 1 and matrix.shape[1] in (2, 3)
    ok = ok and batch in (None, matrix.shape[0]) and dim in (None, matrix.shape[1])
    if not ok:
        got = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        if batch is None or dim is None:
            want = "(B, D, D + 1) with D in (2, 3)"
        else:
            want = f"(B, D, D + 1) = {(batch, dim, dim + 1)}"
        raise ValueError(f"{name} must have shape {want}; got {got}")
    return matrix.shape[1]


def domain_centre(shape: Sequence[int], spacing: Sequence[float], like: Tensor) -> Tensor:
    """Centre ``c: (D,)`` of the domain grid (``c_d = (n_d - 1) h_d / 2``), dtype/device of
    ``like``."""
    values = [0.5 * (int(n) - 1) * float(h) for n, h in zip(shape, spacing)]
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def identity_affine(batch: int, dim: int, like: Tensor) -> Tensor:
    """Identity matrices ``(B, D, D + 1)``, dtype/device of ``like``."""
    eye = torch.eye(dim, dim + 1, dtype=like.dtype, device=like.device)
    return eye.expand(batch, dim, dim + 1).clone()


def matrix_from_params(params: Tensor, centre: Tensor) -> Tensor:
    """Centred parameters ``(B, D*D + D)`` (``L`` row-major, then ``t``) -> ``[A | b]``
    with ``A = I + L`` and ``b = c + t - A c``; ``centre: (D,)``."""
    dim = centre.numel()
    if params.dim() != 2 or params.shape[1] != dim * dim + dim:
        raise ValueError(
            f"params must have shape (B, {dim * dim + dim}); got {tuple(params.shape)}"
        )
    lin = params[:, : dim * dim].view(-1, dim, dim)
    a = torch.eye(dim, dtype=params.dtype, device=params.device) + lin
    b = centre + params[:, dim * dim :] - (a @ centre.unsqueeze(-1)).squeeze(-1)
    return torch.cat([a, b.unsqueeze(-1)], dim=2)


def params_from_matrix(matrix: Tensor, centre: Tensor) -> Tensor:
    """Inverse of :func:`matrix_from_params`: ``[A | b]`` -> ``(B, D*D + D)`` = ``(L, t)``."""
    dim = check_affine(matrix)
    a, b = matrix[:, :, :dim], matrix[:, :, dim]
    lin = a - torch.eye(dim, dtype=a.dtype, device=a.device)
    trans = b + (a @ centre.unsqueeze(-1)).squeeze(-1) - centre
    return torch.cat([lin.flatten(1), trans], dim=1)


def compose_affine(first: Tensor, second: Tensor) -> Tensor:
    """Matrices of ``first o second`` (``x -> first(second(x))``), both ``(B, D, D + 1)``."""
    dim = check_affine(first, "first")
    check_affine(second, "second")
    a1, b1 = first[:, :, :dim], first[:, :, dim:]
    a2, b2 = second[:, :, :dim], second[:, :, dim:]
    return torch.cat([a1 @ a2, a1 @ b2 + b1], dim=2)


def invert_affine(matrix: Tensor) -> Tensor:
    """Inverse ``[A^{-1} | -A^{-1} b]`` of ``(B, D, D + 1)`` matrices."""
    dim = check_affine(matrix)
    a_inv = torch.linalg.inv(matrix[:, :, :dim])
    return torch.cat([a_inv, -(a_inv @ matrix[:, :, dim:])], dim=2)


def affine_to_map(matrix: Tensor, shape: Sequence[int], spacing: Sequence[float]) -> Tensor:
    """The map ``x -> A x + b`` sampled on a grid: ``(B, D, D + 1)`` -> ``(B, D, *S)``."""
    dim = check_affine(matrix)
    shape = tuple(int(n) for n in shape)
    if len(shape) != dim:
        raise ValueError(f"shape must have {dim} entries; got {shape}")
    ident = identity_map(shape, spacing, dtype=matrix.dtype, device=matrix.device).flatten(2)
    out = matrix[:, :, :dim] @ ident + matrix[:, :, dim:]
    return out.view(matrix.shape[0], dim, *shape)


def affine_deviation(matrix: Tensor, centre: Tensor) -> Tensor:
    """``|A - I|_F^2 + |t|^2`` per batch item ``(B,)`` with ``t`` the centred translation
    (the squared distance of the centred parameters from the identity)."""
    return params_from_matrix(matrix, centre).pow(2).sum(dim=1)
