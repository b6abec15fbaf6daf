"""Sampling volumes and working-grid fields at world points (RAS mm).

World points are ``(1, D, *S)`` float64 tensors (channel ``d`` = RAS coordinate ``d``), as given
by :meth:`Grid.world_points <rdmm_lightning.grid.Grid.world_points>`. Images are sampled as ITK's
linear interpolator does: (bi/tri)linear with border values up to half a voxel outside the grid
and zero beyond, so that files written here agree with ``sitk.Resample`` everywhere, not just in
the interior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..grid import Grid, inside_itk_buffer, world_to_index
from ..io import Volume
from ..ops.grid import identity_map
from ..ops.warp import sample_field, warp_labels

__all__ = ["sample_volume", "sample_working_field"]


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
    return out * inside_itk_buffer(idx, volume.shape).to(dtype)


def sample_working_field(
    field: Tensor, world: Tensor, grid: Grid, *, is_map: bool = False
) -> Tensor:
    """Evaluate a field ``(1, C, *S_w)`` on the working ``grid`` at world points
    ``(1, D, *S_out)``.

    With ``is_map=True`` the field is a map in the working grid's domain coordinates and is
    composed with the points: its displacement is interpolated (border padding, so it extends
    beyond the working grid) and added to the points' own domain coordinates. Otherwise the field
    is interpolated with border padding. Returns ``(1, C, *S_out)`` in the field's dtype.
    """
    h = grid.domain_spacing
    x = grid.world_to_domain(world.to(torch.float64))
    work = field.to(torch.float64) if is_map else field
    if is_map:
        work = work - identity_map(work.shape[2:], h, dtype=work.dtype, device=work.device)
    out = sample_field(work, x.to(work.dtype), h, padding_mode="border")
    return (out + x).to(field.dtype) if is_map else out
