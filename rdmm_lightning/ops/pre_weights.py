r"""RDMM pre-weights ``h: (B, N, *S)`` (``h >= 0``, ``sum_i h_i^2 = 1`` per voxel) and the ways
they are produced.

* :func:`normalize_pre_weights` — from network outputs: ReLU/softplus with a floor, then per-voxel
  L2 normalisation.
* :func:`pre_weights_from_raw` / :func:`raw_from_pre_weights` — the free parametrisation that the
  optimisers (rdmm-opt, test-time refinement) work on: ``h_i = exp(x_i) / sqrt(sum_j exp(2 x_j))``,
  i.e. ``h_i^2 = softmax(2 x)_i``, with non-vanishing gradients (no dead ReLU units). This equals
  the reference's softmax followed by per-voxel L2 normalisation (reference-notes.md §1.7).
* :func:`pre_weights_from_region` — predefined pre-weights from a region: ``h^2`` proportional to
  one list inside and another outside, blended by a (soft) membership.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "PRE_WEIGHT_FLOOR",
    "normalize_pre_weights",
    "pre_weights_from_raw",
    "pre_weights_from_region",
    "raw_from_pre_weights",
]

PRE_WEIGHT_FLOOR = 1e-4
"""Smallest pre-weight used before a division or a logarithm."""


def normalize_pre_weights(
    x: Tensor, floor: float = PRE_WEIGHT_FLOOR, activation: str = "relu"
) -> Tensor:
    """Map raw values ``x: (B, N, *S)`` to pre-weights ``h >= 0`` with ``sum_i h_i^2 = 1`` per
    voxel: ReLU (or softplus) with a floor of ``floor`` against division by zero, then per-voxel
    L2 normalisation."""
    if activation == "relu":
        h = x.clamp_min(floor)
    elif activation == "softplus":
        h = torch.nn.functional.softplus(x) + floor
    else:
        raise ValueError(f"activation must be 'relu' or 'softplus'; got {activation!r}")
    return h / h.pow(2).sum(dim=1, keepdim=True).sqrt()


def pre_weights_from_raw(x: Tensor) -> Tensor:
    """``h = exp(x - logsumexp(2 x) / 2)`` over the kernel dimension of ``x: (B, N, *S)``:
    ``h >= 0``, ``sum_i h_i^2 = 1``."""
    return torch.exp(x - 0.5 * torch.logsumexp(2.0 * x, dim=1, keepdim=True))


def raw_from_pre_weights(h: Tensor, floor: float = PRE_WEIGHT_FLOOR) -> Tensor:
    """Raw parameters ``x = log max(h, floor)`` reproducing ``h: (B, N, *S)`` through
    :func:`pre_weights_from_raw` (up to the floor)."""
    return h.clamp_min(floor).log()


def _squared_weights(values: Sequence[float], name: str, n: int | None) -> list[float]:
    h2 = [float(v) for v in values]
    if not h2 or (n is not None and len(h2) != n):
        want = "a non-empty list" if n is None else f"{n} values, as many as the inside list"
        raise ValueError(f"region h^2 {name} must be {want}; got {h2}")
    if min(h2) < 0 or sum(h2) <= 0:
        raise ValueError(f"region h^2 {name} must be non-negative with a positive sum; got {h2}")
    return h2


def pre_weights_from_region(
    inside: Tensor, inside_h2: Sequence[float], outside_h2: Sequence[float]
) -> Tensor:
    """Predefined pre-weights ``(B, N, *S)`` from the region membership ``inside: (B, 1, *S)``
    (1 inside, 0 outside, values in between to blend; floating point).

    ``h = m * sqrt(inside_h2) + (1 - m) * sqrt(outside_h2)`` per voxel, divided by its L2 norm,
    so a voxel fully inside gets ``h^2 = inside_h2 / sum(inside_h2)`` (likewise outside) and every
    voxel ``h >= 0``, ``sum_i h_i^2 = 1``. Both lists hold ``N`` non-negative squared weights with
    a positive sum; computed in ``inside``'s dtype.
    """
    h_in = _squared_weights(inside_h2, "inside", None)
    h_out = _squared_weights(outside_h2, "outside", len(h_in))
    if inside.dim() < 3 or inside.shape[1] != 1 or not torch.is_floating_point(inside):
        raise ValueError(
            f"inside must be a floating-point (B, 1, *S) membership; got {tuple(inside.shape)} "
            f"{inside.dtype}"
        )
    view = (1, -1) + (1,) * (inside.dim() - 2)
    sq_in = torch.tensor(h_in, dtype=inside.dtype, device=inside.device).sqrt().view(view)
    sq_out = torch.tensor(h_out, dtype=inside.dtype, device=inside.device).sqrt().view(view)
    h = inside * sq_in + (1.0 - inside) * sq_out
    return h / h.pow(2).sum(dim=1, keepdim=True).sqrt()
