r"""Domain grids and the tensor coordinate convention used everywhere in rdmm-lightning.

This module is the single place where the tensor convention is written down.

* Images are ``(B, C, *S)`` with ``S = (X, Y)`` or ``(X, Y, Z)``; vector fields and maps are
  ``(B, D, *S)`` with ``D = len(S)``. Channel ``d`` holds the coordinate along spatial axis ``d``
  (tensor order, *not* grid_sample's reversed x/y/z order).
* Domain coordinates: voxel ``i`` along axis ``d`` sits at ``x_d = i * h_d``, ``h`` the *domain
  spacing* (domain units per voxel; "spacing" in this package's tensor code always means it).
  In ``"parity"`` mode (the default, as in the published settings) ``h_d = 1 / (n_d - 1)`` so each
  axis spans [0, 1]. In ``"physical"`` mode the voxel size in mm is scaled so that the largest
  physical extent spans [0, 1] and voxel aspect ratios are kept. World (RAS mm) coordinates and
  the :class:`~rdmm_lightning.grid.Grid` that ties a grid's shape, affine and domain spacing
  together live in :mod:`rdmm_lightning.grid`.
* Maps are pull-back maps ``phi^{-1}``: for each target voxel, the source position in domain
  coordinates, so ``warped = source o phi^{-1}``. The identity map is :func:`identity_map`.
* :func:`to_grid_sample` converts domain coordinates to ``grid_sample``'s normalised [-1, 1]
  coordinates for ``align_corners=True`` (channel order reversed, channels last).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

__all__ = [
    "domain_spacing",
    "identity_map",
    "spatial_shape",
    "to_grid_sample",
    "check_map",
    "low_res_shape",
]


def domain_spacing(
    shape: Sequence[int],
    mode: str = "parity",
    voxel_size_mm: Sequence[float] | None = None,
) -> tuple[float, ...]:
    """Domain spacing ``h_d`` (domain units per voxel) of a grid of spatial ``shape``.

    Args:
        shape: spatial shape ``S`` (2 or 3 entries, each >= 2).
        mode: ``"parity"`` (each axis spans [0, 1]) or ``"physical"`` (largest physical extent
            spans [0, 1], aspect ratios kept).
        voxel_size_mm: millimetres per voxel along each axis; used in ``"physical"`` mode,
            isotropic if omitted.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise ValueError(f"shape must have 2 or 3 entries, each >= 2; got {shape}")
    if mode == "parity":
        return tuple(1.0 / (n - 1) for n in shape)
    if mode == "physical":
        phys = (1.0,) * len(shape) if voxel_size_mm is None else tuple(map(float, voxel_size_mm))
        if len(phys) != len(shape) or min(phys) <= 0:
            raise ValueError(
                f"voxel_size_mm must have {len(shape)} positive entries; got {voxel_size_mm}"
            )
        extent = max(s * (n - 1) for s, n in zip(phys, shape))
        return tuple(s / extent for s in phys)
    raise ValueError(f"mode must be 'parity' or 'physical'; got {mode!r}")


def spatial_shape(x: Tensor) -> tuple[int, ...]:
    """Spatial shape ``S`` of a ``(B, C, *S)`` tensor."""
    return tuple(x.shape[2:])


@lru_cache(maxsize=32)
def _identity_cached(
    shape: tuple[int, ...], spacing: tuple[float, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    axes = [torch.arange(n, dtype=torch.float64, device=device) * h for n, h in zip(shape, spacing)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid.to(dtype).unsqueeze(0)


def identity_map(
    shape: Sequence[int],
    spacing: Sequence[float] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Identity map ``(1, D, *S)`` in domain coordinates (``x_d = i * h_d``).

    The result is cached and shared: do not modify it in place (``.clone()`` first).
    """
    shape = tuple(int(n) for n in shape)
    spacing = domain_spacing(shape) if spacing is None else tuple(float(h) for h in spacing)
    if len(spacing) != len(shape):
        raise ValueError(f"spacing must have {len(shape)} entries; got {spacing}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return _identity_cached(shape, spacing, dtype, device)


def to_grid_sample(phi: Tensor, shape: Sequence[int], spacing: Sequence[float]) -> Tensor:
    """Convert points in domain coordinates to ``grid_sample`` coordinates.

    Args:
        phi: ``(B, D, *S_out)`` points in the domain coordinates of the grid being *sampled*.
        shape: spatial shape ``S_in`` of the sampled grid.
        spacing: domain spacing ``h`` of the sampled grid.

    Returns:
        ``(B, *S_out, D)`` in [-1, 1] for ``align_corners=True``, last dimension in grid_sample's
        order (x = last spatial axis).
    """
    dim = phi.shape[1]
    scale = torch.tensor(
        [2.0 / (h * (n - 1)) for n, h in zip(shape, spacing)], dtype=phi.dtype, device=phi.device
    ).view(1, dim, *([1] * dim))
    g = phi * scale - 1.0
    return g.flip(1).movedim(1, -1)


def check_map(phi: Tensor, name: str = "phi", shape: Sequence[int] | None = None) -> None:
    """Raise ValueError unless ``phi`` is a ``(B, D, *S)`` map with ``D = len(S)`` in {2, 3}."""
    if phi.dim() not in (4, 5) or phi.shape[1] != phi.dim() - 2:
        raise ValueError(
            f"{name} must have shape (B, D, *S) with D = len(S) in (2, 3); got {tuple(phi.shape)}"
        )
    if shape is not None and tuple(phi.shape[2:]) != tuple(shape):
        raise ValueError(
            f"{name} must have spatial shape {tuple(shape)}; got {tuple(phi.shape[2:])}"
        )


def low_res_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """Low-resolution grid size ``max(8, round(n * factor))`` per axis (never above ``n``)."""
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1]; got {factor}")
    return tuple(min(int(n), max(8, round(n * factor))) for n in shape)
