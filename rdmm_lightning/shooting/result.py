"""Result container and input validation shared by the shooting units."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ShootingResult", "NonFiniteInputError", "validate_momentum", "validate_pre_weights"]


@dataclass
class ShootingResult:
    """Outcome of one shooting over t in [0, 1].

    Attributes:
        phi_inv: pull-back map ``phi^{-1}`` at t = 1, ``(B, D, *S)`` (target -> source).
        phi: forward map ``phi`` at t = 1 (source -> target) when requested, else None.
        momentum: momentum at t = 1 ``(B, D, *S)`` (vSVF: the constant m0).
        velocity0: velocity at t = 0 ``(B, D, *S)`` (for the shooting energy ``<m0, v0>``).
        pre_weights: RDMM pre-weights at t = 1 ``(B, N, *S)``, else None.
        weights0: RDMM smoothed weights ``w`` at t = 0 ``(B, N, *S)``, else None.
        trajectory: when requested, the state at each requested time, as a dict of tensors with a
            leading time dimension (keys ``"m"``, ``"phi_inv"``, ``"phi"``, ``"h"`` as applicable).
        spacing: domain spacing of the grid the shooting ran on.
    """

    phi_inv: Tensor
    momentum: Tensor
    velocity0: Tensor
    spacing: tuple[float, ...]
    phi: Tensor | None = None
    pre_weights: Tensor | None = None
    weights0: Tensor | None = None
    trajectory: dict[str, Tensor] | None = field(default=None, repr=False)


class NonFiniteInputError(ValueError):
    """A shot's initial momentum or pre-weights hold NaN or Inf (e.g. the outputs of a network
    whose training diverged)."""


def validate_momentum(m0: Tensor, name: str = "m0") -> None:
    """Raise ValueError unless ``m0`` is a finite floating ``(B, D, *S)`` field, D = len(S)."""
    if not isinstance(m0, torch.Tensor) or not torch.is_floating_point(m0):
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, D, *S)")
    if m0.dim() not in (4, 5) or m0.shape[1] != m0.dim() - 2:
        raise ValueError(
            f"{name} must have shape (B, D, *S) with D = len(S) in (2, 3); got {tuple(m0.shape)}"
        )
    if min(m0.shape[2:]) < 3:
        raise ValueError(f"{name} needs at least 3 voxels per axis; got {tuple(m0.shape)}")
    if not bool(torch.isfinite(m0).all()):
        raise NonFiniteInputError(f"{name} contains non-finite values (NaN or Inf)")


def validate_pre_weights(h0: Tensor, m0: Tensor, num_kernels: int, name: str = "h0") -> None:
    """Raise ValueError unless ``h0`` is a finite ``(B, N, *S)`` matching ``m0`` and N kernels."""
    expected = (m0.shape[0], num_kernels, *m0.shape[2:])
    if not isinstance(h0, torch.Tensor) or tuple(h0.shape) != expected:
        got = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
        raise ValueError(f"{name} must have shape {expected} (B, N, *S); got {got}")
    if h0.dtype != m0.dtype:
        raise ValueError(f"{name} dtype {h0.dtype} must match m0 dtype {m0.dtype}")
    if not bool(torch.isfinite(h0).all()):
        raise NonFiniteInputError(f"{name} contains non-finite values (NaN or Inf)")
