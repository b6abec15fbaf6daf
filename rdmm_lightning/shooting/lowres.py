"""Low-resolution shooting: bring a map shot on a coarse grid to full resolution and compose
it with an initial map (affine or a previous step). The coarse grid is
:meth:`Grid.low_res <rdmm_lightning.grid.Grid.low_res>` of the full one (same domain)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..ops.resample import resample_map
from ..ops.warp import compose_maps

__all__ = ["upsample_and_compose"]


def upsample_and_compose(
    phi_inv: Tensor,
    full_shape: Sequence[int],
    spacing: Sequence[float],
    full_spacing: Sequence[float],
    *,
    phi: Tensor | None = None,
    initial_map: Tensor | None = None,
    initial_forward: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Upsample shot maps to ``full_shape`` and compose with initial maps.

    Args:
        phi_inv: pull-back map ``psi^{-1}`` on the low-resolution grid ``(B, D, *S_low)``.
        full_shape: full-resolution spatial shape.
        spacing: domain spacing of the low-resolution grid.
        full_spacing: domain spacing of the full-resolution grid.
        phi: forward map ``psi`` on the low-resolution grid, or None.
        initial_map: pull-back ``A: (B, D, *S_full)`` applied before (total ``A o psi^{-1}``).
        initial_forward: its inverse ``A^{-1}`` on the full grid (total forward ``psi o A^{-1}``).

    Returns:
        ``(phi_inv_full, phi_full)``; ``phi_full`` is None when ``phi`` is None. When an initial
        map is given without ``initial_forward``, the forward map is returned uncomposed
        (``psi`` only) — pass the inverse to get the total forward map.
    """
    phi_inv_full = resample_map(phi_inv, full_shape, spacing, full_spacing)
    if initial_map is not None:
        phi_inv_full = compose_maps(initial_map, phi_inv_full, full_spacing)
    phi_full = None
    if phi is not None:
        phi_full = resample_map(phi, full_shape, spacing, full_spacing)
        if initial_forward is not None:
            phi_full = compose_maps(phi_full, initial_forward, full_spacing)
    return phi_inv_full, phi_full
