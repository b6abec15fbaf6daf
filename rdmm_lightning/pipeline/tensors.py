"""Tensor inputs of the Python API: image batches and :class:`~rdmm_lightning.io.Volume` s on a
grid of a given voxel size."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..io import Volume

__all__ = ["as_batch", "tensor_volume", "voxel_affine"]


def as_batch(x: Tensor, name: str) -> Tensor:
    """``(*S)``, ``(1, *S)`` or ``(B, 1, *S)`` (2D or 3D) -> ``(B, 1, *S)``.

    Ambiguous 4D shapes ``(a, 1, X, Y)`` are read as a 2D batch, ``(1, X, Y, Z)`` as one 3D
    image with its channel.
    """
    if x.dim() == 2 or (x.dim() == 3 and x.shape[0] != 1):
        out = x.unsqueeze(0).unsqueeze(0)  # (*S)
    elif x.dim() == 3 or (x.dim() == 4 and x.shape[1] != 1 and x.shape[0] == 1):
        out = x.unsqueeze(0)  # (1, *S)
    else:
        out = x
    if out.dim() not in (4, 5) or out.shape[1] != 1:
        raise ValueError(
            f"{name} must be (*S), (1, *S) or (B, 1, *S) with 2 or 3 spatial dims; "
            f"got {tuple(x.shape)}"
        )
    return out


def voxel_affine(voxel_size: Sequence[float] | None, dim: int) -> np.ndarray:
    """``(4, 4)`` affine of an axis-aligned grid with ``voxel_size`` mm (None: 1 mm)."""
    size = [1.0] * dim if voxel_size is None else [float(v) for v in voxel_size]
    if len(size) != dim or min(size) <= 0:
        raise ValueError(f"voxel_size must have {dim} positive entries; got {voxel_size}")
    return np.diag(size + [1.0] * (4 - dim))


def tensor_volume(
    x: Tensor | str | os.PathLike | Volume | None,
    name: str,
    affine: np.ndarray | None,
    labels: bool = False,
) -> str | os.PathLike | Volume | None:
    """Paths and Volumes unchanged; a batch-1 tensor becomes a Volume with ``affine``
    (``labels``: integer values required, int64)."""
    if x is None or not isinstance(x, Tensor):
        return x
    t = as_batch(x, name)[0].detach().cpu()
    if labels:
        if torch.is_floating_point(t) and bool((t != t.round()).any()):
            raise ValueError(f"{name} must hold integer labels")
        return Volume(t.round().long() if torch.is_floating_point(t) else t.long(), affine)
    return Volume(t.float(), affine, None, "float32")
