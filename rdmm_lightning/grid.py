r"""The one voxel grid type: shape, where the voxels lie in the world and in the domain.

Three coordinate frames describe a point of a grid of spatial shape ``S`` (``D = len(S)``):

* **index** ``i``: voxel indices along the tensor axes (continuous between voxels);
* **world** ``w``: RAS millimetres (the nibabel convention), ``w = A i + t`` with
  ``A = affine[:D, :D]`` and ``t = affine[:D, 3]`` of the ``(4, 4)`` index -> world affine. A 2D
  grid keeps a 4x4 affine: its index is ``(i, j, 0)`` and its world point the first two RAS
  components (what ITK does with a 2D NIfTI);
* **domain** ``x``: the coordinates of maps and velocity fields (:mod:`rdmm_lightning.ops.grid`),
  ``x_d = i_d h_d`` with the *domain spacing* ``h`` (so ``w = A diag(1/h) x + t``).

Two quantities are both called "spacing" elsewhere and get distinct names here:
``voxel_size_mm`` (millimetres per voxel, the column norms of the affine) and ``domain_spacing``
(domain units per voxel, ``h``). A grid's domain spacing follows from a *spacing mode*
(``"parity"``: each axis spans [0, 1]; ``"physical"``: the largest physical extent spans
[0, 1], voxel aspect ratios kept) or is given (e.g. by a caller of the optimisers).

The point functions take ``(N, D)`` points (one per row) or ``(B, D, *S)`` fields (channel ``d``
= coordinate along axis ``d``). Torch tensors keep their device and dtype (the arithmetic runs
in float64); numpy arrays give numpy arrays. :class:`Grid` bundles them with a grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .ops.grid import domain_spacing as mode_spacing
from .ops.grid import identity_map, low_res_shape
from .options import SpacingMode, values

__all__ = [
    "Grid",
    "PointsLike",
    "index_to_world",
    "world_to_index",
    "domain_to_world",
    "world_to_domain",
    "index_grid",
    "inside_itk_buffer",
    "ras_affine",
    "resampled_affine",
    "voxel_size_mm",
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
    m = torch.as_tensor(np.array(matrix, dtype=np.float64), device=p.device)  # a writable copy
    o = torch.as_tensor(np.array(offset, dtype=np.float64), device=p.device)
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


def _checked_spacing(domain_spacing: Sequence[float], dim: int) -> np.ndarray:
    h = np.asarray([float(s) for s in domain_spacing], dtype=np.float64)
    if h.shape != (dim,) or np.any(h <= 0):
        raise ValueError(f"domain_spacing must have {dim} positive entries; got {domain_spacing}")
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
    points: PointsLike, affine: np.ndarray, domain_spacing: Sequence[float]
) -> PointsLike:
    """Domain coordinates (``x_d = i_d h_d``) ``(N, D)`` or ``(B, D, *S)`` -> world RAS mm."""
    dim = _point_dim(points)
    a, t = _linear(affine, dim)
    h = _checked_spacing(domain_spacing, dim)
    return _apply_affine(points, a / h[None, :], t)


def world_to_domain(
    world: PointsLike, affine: np.ndarray, domain_spacing: Sequence[float]
) -> PointsLike:
    """World RAS mm ``(N, D)`` or ``(B, D, *S)`` -> domain coordinates of the grid ``affine``
    with ``domain_spacing``."""
    dim = _point_dim(world)
    a, t = _linear(affine, dim)
    h = _checked_spacing(domain_spacing, dim)
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


def inside_itk_buffer(index: PointsLike, shape: Sequence[int]) -> PointsLike:
    """Whether continuous voxel indices ``(N, D)`` or ``(B, D, *S)`` lie within half a voxel of
    a grid of ``shape`` (ITK's buffered region: its linear interpolators and displacement-field
    transforms use border values up to there and nothing beyond). Returns bool ``(N, 1)`` or
    ``(B, 1, *S)``; numpy in, numpy out."""
    is_numpy = isinstance(index, np.ndarray)
    idx = torch.from_numpy(index) if is_numpy else index
    dim = _point_dim(idx)
    if len(shape) != dim:
        raise ValueError(f"shape must have {dim} entries; got {tuple(shape)}")
    size = torch.tensor([float(n) for n in shape], dtype=idx.dtype, device=idx.device)
    size = size.view(1, dim, *([1] * (idx.dim() - 2)))
    inside = ((idx >= -0.5) & (idx <= size - 0.5)).all(dim=1, keepdim=True)
    return inside.numpy() if is_numpy else inside


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


def ras_affine(voxel_size_mm: Sequence[float], origin: Sequence[float] | None = None) -> np.ndarray:
    """Axis-aligned affine ``(4, 4)``: diagonal ``voxel_size_mm`` (2 or 3 entries) plus ``origin``
    (mm). A 2-entry voxel size gets 1 mm along the third axis; a missing origin is zero."""
    sp = [float(s) for s in voxel_size_mm]
    if len(sp) not in (2, 3) or min(sp) <= 0:
        raise ValueError(f"voxel_size_mm must have 2 or 3 positive entries; got {voxel_size_mm}")
    sp += [1.0] * (3 - len(sp))
    org = [0.0, 0.0, 0.0] if origin is None else [float(o) for o in origin]
    if len(org) > 3:
        raise ValueError(f"origin must have at most 3 entries; got {origin}")
    org += [0.0] * (3 - len(org))
    affine = np.diag(sp + [1.0])
    affine[:3, 3] = org
    return affine


def voxel_size_mm(affine: np.ndarray, dim: int) -> tuple[float, ...]:
    """Millimetres per voxel along each of the first ``dim`` axes (column norms of ``affine``)."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(np.linalg.norm(affine[:3, d])) for d in range(dim))


def _check_mode(spacing_mode: str) -> str:
    if spacing_mode not in values(SpacingMode):
        raise ValueError(
            f"spacing_mode must be one of {', '.join(values(SpacingMode))}; got {spacing_mode!r}"
        )
    return str(spacing_mode)


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid in the world and in the domain (see the module docstring).

    Build one with :meth:`from_affine` (domain spacing from a spacing mode) or
    :meth:`from_domain_spacing` (domain spacing given); a :class:`~rdmm_lightning.io.Volume`
    gives its own with ``volume.grid(spacing_mode)``.

    Attributes:
        shape: spatial shape ``S`` (2 or 3 sizes, each >= 2).
        domain_spacing: ``h``, domain units per voxel along each axis.
        affine: ``(4, 4)`` voxel index -> world RAS mm (read-only float64).
        spacing_mode: ``"parity"`` or ``"physical"`` when ``domain_spacing`` follows from the
            grid (recomputed for a resized grid); None when it was given (rescaled by
            ``(n - 1) / (m - 1)`` for a resized grid, so the domain stays the same).
    """

    shape: tuple[int, ...]
    domain_spacing: tuple[float, ...]
    affine: np.ndarray
    spacing_mode: str | None = None

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) not in (2, 3) or min(shape) < 2:
            raise ValueError(f"grid shape must have 2 or 3 entries, each >= 2; got {shape}")
        spacing = tuple(float(h) for h in _checked_spacing(self.domain_spacing, len(shape)))
        affine = np.array(self.affine, dtype=np.float64, copy=True)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be (4, 4); got {affine.shape}")
        affine.flags.writeable = False
        mode = None if self.spacing_mode is None else _check_mode(self.spacing_mode)
        for name, value in (("shape", shape), ("domain_spacing", spacing), ("affine", affine)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "spacing_mode", mode)

    # ------------------------------------------------------------------------ construction
    @classmethod
    def from_affine(
        cls,
        shape: Sequence[int],
        affine: np.ndarray | None = None,
        spacing_mode: str = "parity",
    ) -> Grid:
        """The grid of ``shape`` and ``affine`` (default: 1 mm voxels at the origin) with the
        domain spacing of ``spacing_mode`` (:func:`rdmm_lightning.ops.grid.domain_spacing`;
        ``"physical"`` uses :attr:`voxel_size_mm`)."""
        shape = tuple(int(n) for n in shape)
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        mode = _check_mode(spacing_mode)
        spacing = mode_spacing(shape, mode, voxel_size_mm(affine, len(shape)))
        return cls(shape, spacing, affine, mode)

    @classmethod
    def from_domain_spacing(
        cls,
        shape: Sequence[int],
        domain_spacing: Sequence[float] | None = None,
        affine: np.ndarray | None = None,
    ) -> Grid:
        """The grid of ``shape`` with the given ``domain_spacing`` (parity when None) and
        ``affine`` (default: 1 mm voxels at the origin).

        Raises:
            ValueError: one line: not one positive number per axis of ``shape``.
        """
        shape = tuple(int(n) for n in shape)
        if domain_spacing is None:
            domain_spacing = mode_spacing(shape)
        else:
            try:
                domain_spacing = tuple(float(h) for h in domain_spacing)
            except (TypeError, ValueError):
                raise ValueError(
                    f"spacing must be a sequence of {len(shape)} numbers; got {domain_spacing!r}"
                ) from None
            if len(domain_spacing) != len(shape) or min(domain_spacing) <= 0:
                raise ValueError(
                    f"spacing must have {len(shape)} positive entries; got {domain_spacing}"
                )
        return cls(shape, domain_spacing, np.eye(4) if affine is None else affine, None)

    # -------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Number of spatial dimensions ``D`` (2 or 3)."""
        return len(self.shape)

    @property
    def voxel_size_mm(self) -> tuple[float, ...]:
        """Millimetres per voxel along each axis (column norms of the affine)."""
        return voxel_size_mm(self.affine, self.dim)

    # ------------------------------------------------------------------------- other grids
    def resize(self, shape: Sequence[int]) -> Grid:
        """The grid of ``shape`` over the same field of view, corners aligned (new voxel ``i``
        at old index ``i (n - 1) / (m - 1)``); its domain spacing follows :attr:`spacing_mode`
        (see the class docstring), so both grids cover the same domain."""
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.dim:
            raise ValueError(f"shape must have {self.dim} entries; got {shape}")
        affine = resampled_affine(self.affine, self.shape, shape)
        if self.spacing_mode is not None:
            return Grid.from_affine(shape, affine, self.spacing_mode)
        old = zip(self.domain_spacing, self.shape, shape)
        return Grid(shape, tuple(h * (n - 1) / (m - 1) for h, n, m in old), affine, None)

    def low_res(self, factor: float) -> Grid:
        """:meth:`resize` to :func:`~rdmm_lightning.ops.grid.low_res_shape` ``(shape, factor)``
        (``max(8, round(n * factor))`` voxels per axis, never more than ``n``)."""
        return self.resize(low_res_shape(self.shape, factor))

    # -------------------------------------------------------------------------- comparison
    def affine_distance(self, other: Grid) -> float:
        """Largest difference of the two affines' entries (mm)."""
        return float(np.abs(self.affine - other.affine).max())

    def same_as(self, other: Grid, atol_mm: float = 1e-6) -> bool:
        """Same shape and voxel positions (affines equal to ``atol_mm``); domain spacings are not
        compared."""
        return self.shape == other.shape and self.affine_distance(other) < atol_mm

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return (
            self.shape == other.shape
            and self.domain_spacing == other.domain_spacing
            and self.spacing_mode == other.spacing_mode
            and bool(np.array_equal(self.affine, other.affine))
        )

    def __hash__(self) -> int:
        return hash((self.shape, self.domain_spacing, self.spacing_mode, self.affine.tobytes()))

    # ---------------------------------------------------------------------- points and maps
    def index_to_world(self, index: PointsLike) -> PointsLike:
        """Voxel indices -> world RAS mm (:func:`index_to_world`)."""
        return index_to_world(index, self.affine)

    def world_to_index(self, world: PointsLike) -> PointsLike:
        """World RAS mm -> continuous voxel indices (:func:`world_to_index`)."""
        return world_to_index(world, self.affine)

    def domain_to_world(self, points: PointsLike) -> PointsLike:
        """Domain coordinates of this grid -> world RAS mm (:func:`domain_to_world`)."""
        return domain_to_world(points, self.affine, self.domain_spacing)

    def world_to_domain(self, world: PointsLike) -> PointsLike:
        """World RAS mm -> domain coordinates of this grid (:func:`world_to_domain`)."""
        return world_to_domain(world, self.affine, self.domain_spacing)

    def inside_itk_buffer(self, index: PointsLike) -> PointsLike:
        """Whether voxel indices lie within half a voxel of the grid (:func:`inside_itk_buffer`)."""
        return inside_itk_buffer(index, self.shape)

    def world_points(self, device: torch.device | str | None = None) -> Tensor:
        """World RAS positions of all voxel centres, ``(1, D, *S)`` float64."""
        index = index_grid(self.shape, dtype=torch.float64, device=device)
        return index_to_world(index, self.affine)

    def identity_map(
        self, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        """Identity map ``(1, D, *S)`` in this grid's domain coordinates (cached and shared: do
        not modify it in place)."""
        return identity_map(self.shape, self.domain_spacing, dtype=dtype, device=device)
