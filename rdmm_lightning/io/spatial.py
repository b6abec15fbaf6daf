"""Conversions between voxel indices, domain coordinates and world (RAS mm) coordinates, and
resampling of a :class:`~rdmm_lightning.io.volume.Volume` to a working grid.

* index ``i`` -> world: ``w = A i + t`` with ``A = affine[:D, :D]``, ``t = affine[:D, 3]``.
  For ``D = 2`` this is the in-plane part of the 4x4 affine (index ``(i, j, 0)``, world = first two
  RAS components).
* domain ``x`` -> index: ``i_d = x_d / h_d`` (see :mod:`rdmm_lightning.ops.grid`), so
  ``w = A diag(1/h) x + t``.

Points are ``(N, D)`` (one point per row) or ``(B, D, *S)`` (channel ``d`` = coordinate along
axis ``d``). Torch tensors keep their device and dtype (the arithmetic runs in float64); numpy
arrays give numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..ops.resample import resample_image
from .volume import Volume

__all__ = [
    "index_to_world",
    "world_to_index",
    "domain_to_world",
    "world_to_domain",
    "index_grid",
    "resample_volume",
    "resampled_affine",
]

PointsLike = Tensor | np.ndarray


def _point_dim(points: PointsLike) -> int:
    shape = tuple(points.shape)
    if len(shape) == 2 and shape[1] in (2, 3):
        return shape[1]
    if len(shape) in (4, 5) and shape[1] == len(shape) - 2:
        return shape[1]
    raise ValueError(f"points must be (N, D) or (B, D, *S) with D = len(S) in (2, 3); got {shape}")


def _apply_affine(points: PointsLike, matrix: np.ndarray, offset: np.ndarray) -> PointsLike:
    """``matrix @ p + offset`` for every point of ``points`` ((N, D) or (B, D, *S))."""
    is_numpy = isinstance(points, np.ndarray)
    p = torch.from_numpy(points) if is_numpy else points
    dim = _point_dim(p)
    m = torch.as_tensor(matrix, dtype=torch.float64, device=p.device)
    o = torch.as_tensor(offset, dtype=torch.float64, device=p.device)
    q = p.to(torch.float64)
    if q.dim() == 2:
        out = q @ m.T + o
    else:
        out = torch.einsum("ij,bj...->bi...", m, q) + o.view(1, dim, *([1] * dim))
    if is_numpy:
        return out.numpy().astype(points.dtype if points.dtype.kind == "f" else np.float64)
    return out.to(p.dtype if torch.is_floating_point(p) else torch.float64)


def _linear(affine: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be (4, 4); got {affine.shape}")
    return affine[:dim, :dim], affine[:dim, 3]


def _spacing(spacing_domain: Sequence[float], dim: int) -> np.ndarray:
    h = np.asarray([float(s) for s in spacing_domain], dtype=np.float64)
    if h.shape != (dim,) or np.any(h <= 0):
        raise ValueError(f"spacing_domain must have {dim} positive entries; got {spacing_domain}")
    return h


def index_to_world(index: PointsLike, affine: np.ndarray) -> PointsLike:
    """Voxel indices ``(N, D)`` or ``(B, D, *S)`` -> world RAS mm (same layout)."""
    a, t = _linear(affine, _point_dim(index))
    return _apply_affine(index, a, t)


def world_to_index(world: PointsLike, affine: np.ndarray) -> PointsLike:
    """World RAS mm ``(N, D)`` or ``(B, D, *S)`` -> continuous voxel indices (same layout)."""
    a, t = _linear(affine, _point_dim(world))
    inv = np.linalg.inv(a)
    return _apply_affine(world, inv, -inv @ t)


def domain_to_world(
    points: PointsLike, affine: np.ndarray, spacing_domain: Sequence[float]
) -> PointsLike:
    """Domain coordinates (``x_d = i_d h_d``) ``(N, D)`` or ``(B, D, *S)`` -> world RAS mm."""
    dim = _point_dim(points)
    a, t = _linear(affine, dim)
    h = _spacing(spacing_domain, dim)
    return _apply_affine(points, a / h[None, :], t)


def world_to_domain(
    world: PointsLike, affine: np.ndarray, spacing_domain: Sequence[float]
) -> PointsLike:
    """World RAS mm ``(N, D)`` or ``(B, D, *S)`` -> domain coordinates of the grid ``affine``
    with domain spacing ``spacing_domain``."""
    dim = _point_dim(world)
    a, t = _linear(affine, dim)
    h = _spacing(spacing_domain, dim)
    m = h[:, None] * np.linalg.inv(a)
    return _apply_affine(world, m, -m @ t)


def index_grid(
    shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Voxel indices of a grid as a ``(1, D, *S)`` tensor (channel ``d`` = index along axis d)."""
    axes = [torch.arange(int(n), dtype=dtype, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def resampled_affine(
    affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]
) -> np.ndarray:
    """Affine of a grid of ``new_shape`` over the same field of view, corners aligned: new voxel
    ``i`` sits at old index ``i (n - 1) / (m - 1)``."""
    out = np.array(affine, dtype=np.float64, copy=True)
    for d, (n, m) in enumerate(zip(old_shape, new_shape)):
        if n < 2 or m < 2:
            raise ValueError(f"shapes need >= 2 voxels per axis; got {old_shape} -> {new_shape}")
        out[:3, d] *= (n - 1) / (m - 1)
    return out


def _nearest_indices(n: int, m: int, device: torch.device) -> Tensor:
    pos = torch.arange(m, dtype=torch.float64, device=device) * ((n - 1) / (m - 1))
    return torch.floor(pos + 0.5).long().clamp_(0, n - 1)


def resample_volume(
    volume: Volume, shape: Sequence[int], *, antialias: bool = False, nearest: bool | None = None
) -> Volume:
    """Resample ``volume`` to a grid of spatial ``shape`` over the same field of view.

    Corners are aligned (voxel ``i`` of the new grid at old index ``i (n - 1) / (m - 1)``, the
    first and last voxel centres keep their world positions) and the affine is updated.
    Integer data (labels) use nearest neighbour, float data (bi/tri)linear interpolation
    (optionally Gaussian anti-aliasing when downsampling, ``antialias=True``). ``nearest``
    overrides the choice. Returns a new :class:`Volume` (``path`` and ``file_dtype`` kept).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != volume.dim:
        raise ValueError(f"shape must have {volume.dim} entries; got {shape}")
    affine = resampled_affine(volume.affine, volume.shape, shape)
    if shape == volume.shape:
        return Volume(volume.data, affine, volume.path, volume.file_dtype)
    data = volume.data
    use_nearest = (not torch.is_floating_point(data)) if nearest is None else nearest
    if use_nearest:
        out = data
        for d, (n, m) in enumerate(zip(volume.shape, shape)):
            out = out.index_select(d + 1, _nearest_indices(n, m, data.device))
    else:
        work = data if torch.is_floating_point(data) else data.to(torch.float32)
        out = resample_image(work.unsqueeze(0), shape, antialias=antialias).squeeze(0)
    return Volume(out.contiguous(), affine, volume.path, volume.file_dtype)
