r"""Inverse consistency of a pair of registrations (source -> target and target -> source).

For pull-back maps ``phi_st^{-1}`` (target grid -> source coordinates) and ``phi_ts^{-1}``
(source grid -> target coordinates) of images on one grid, the composition
``phi_st^{-1} o phi_ts^{-1}`` is the identity when the two registrations are inverse to each
other. The error reported here is the length of ``phi_st^{-1}(phi_ts^{-1}(x)) - x`` in voxels,
averaged over the grid (the symmetry *loss* of training,
:func:`rdmm_lightning.losses.map_symmetry_loss`, is the mean squared length in domain units).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.grid import check_map, domain_spacing, identity_map
from ..ops.warp import compose_maps

__all__ = ["inverse_consistency_error"]


def inverse_consistency_error(
    phi_st_inv: Tensor, phi_ts_inv: Tensor, spacing: Sequence[float] | None = None
) -> Tensor:
    """Mean over voxels of ``|phi_st^{-1}(phi_ts^{-1}(x)) - x|`` in voxels, per batch item.

    Args:
        phi_st_inv, phi_ts_inv: pull-back maps ``(B, D, *S)`` on one grid (domain coordinates).
        spacing: domain spacing of the grid (parity when None).

    Returns:
        ``(B,)``; 0 for mutually inverse maps (up to interpolation).
    """
    check_map(phi_st_inv, "phi_st_inv")
    if phi_ts_inv.shape != phi_st_inv.shape:
        raise ValueError(
            f"phi_ts_inv must have the shape of phi_st_inv {tuple(phi_st_inv.shape)}; "
            f"got {tuple(phi_ts_inv.shape)}"
        )
    shape = tuple(phi_st_inv.shape[2:])
    spacing = domain_spacing(shape) if spacing is None else tuple(float(h) for h in spacing)
    residual = compose_maps(phi_st_inv, phi_ts_inv, spacing) - identity_map(
        shape, spacing, dtype=phi_st_inv.dtype, device=phi_st_inv.device
    )
    h = torch.tensor(spacing, dtype=residual.dtype, device=residual.device)
    voxels = residual / h.view(1, -1, *([1] * len(shape)))
    return voxels.pow(2).sum(dim=1).sqrt().flatten(1).mean(dim=1)
