"""Sampling volumes and working-grid fields at world points (RAS mm).

World points are ``(1, D, *S)`` float64 tensors (channel ``d`` = RAS coordinate ``d``), as given
by :func:`grid_world`. Images are sampled as ITK's linear interpolator does: (bi/tri)linear with
border values up to half a voxel outside the grid and zero beyond, so that files written here
agree with ``sitk.Resample`` everywhere, not just in the interior.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..io import Volume, index_grid, index_to_world, world_to_domain, world_to_index
from ..ops.grid import identity_map
from ..ops.warp import sample_field, warp_labels

__all__ = ["grid_world", "sample_volume", "sample_working_field", "same_grid"]


def grid_world(
    shape: Sequence[int], affine: np.ndarray, device: torch.device | str | None = None
) -> Tensor:
    """World RAS positions of all voxel centres of a grid, ``(1, D, *S)`` float64."""
    return index_to_world(index_grid(shape, dtype=torch.float64, device=device), affine)


def same_grid(shape_a: Sequence[int], affine_a, shape_b: Sequence[int], affine_b) -> bool:
    """True if two grids have the same shape and affines equal to 1e-6 mm."""
    return tuple(shape_a) == tuple(shape_b) and bool(
        np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max() < 1e-6
    )


def _inside_mask(idx: Tensor, shape: Sequence[int]) -> Tensor:
    """``(1, 1, *S)`` bool: continuous index within half a voxel of the grid (ITK's buffer)."""
    size = torch.tensor([float(n) for n in shape], dtype=idx.dtype, device=idx.device)
    size = size.view(1, -1, *([1] * (idx.dim() - 2)))
    return ((idx >= -0.5) & (idx <= size - 0.5)).all(dim=1, keepdim=True)


def sample_volume(
    volume: Volume,
    world: Tensor,
    *,
    labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sample ``volume`` at world points ``(1, D, *S_out)``; returns ``(1, C, *S_out)``.

    Images: (bi/tri)linear interpolation in ``dtype``, zero beyond half a voxel outside the grid.
    Label maps (``labels=True``): nearest neighbour, integer dtype kept, 0 outside.
    """
    dim = volume.dim
    if world.shape[1] != dim:
        raise ValueError(f"world points must have {dim} channels; got {tuple(world.shape)}")
    idx = world_to_index(world.to(torch.float64), volume.affine)
    data = volume.batch().to(world.device)
    unit = (1.0,) * dim
    if labels:
        return warp_labels(data, idx, unit)
    out = sample_field(data.to(dtype), idx.to(dtype), unit, padding_mode="border")
    return out * _inside_mask(idx, volume.shape).to(dtype)


def sample_working_field(
    field: Tensor,
    world: Tensor,
    working_affine: np.ndarray,
    spacing: Sequence[float],
    *,
    is_map: bool = False,
) -> Tensor:
    """Evaluate a working-grid field ``(1, C, *S_w)`` at world points ``(1, D, *S_out)``.

    With ``is_map=True`` the field is a map in the working grid's domain coordinates and is
    composed with the points: its displacement is interpolated (border padding, so it extends
    beyond the working grid) and added to the points' own domain coordinates. Otherwise the field
    is interpolated with border padding. Returns ``(1, C, *S_out)`` in the field's dtype.
    """
    x = world_to_domain(world.to(torch.float64), working_affine, spacing)
    work = field.to(torch.float64) if is_map else field
    if is_map:
        work = work - identity_map(work.shape[2:], spacing, dtype=work.dtype, device=work.device)
    out = sample_field(work, x.to(work.dtype), spacing, padding_mode="border")
    return (out + x).to(field.dtype) if is_map else out
