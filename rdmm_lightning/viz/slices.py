"""2D views of 2D/3D volumes for figures: central slices in voxel order, and the planes of a
radiological view built from the volume's world affine.

Radiological view (what :func:`view_planes` gives with an affine): the volume is first put in the
canonical RAS voxel order (:func:`canonical_orientation`, the nearest axis-aligned orientation
for an oblique affine, no reslicing), then shown with

* axial (slice along S): the patient's right on the image left, anterior up;
* coronal (slice along A): the patient's right on the image left, superior up;
* sagittal (slice along R): anterior on the image left, superior up;
* 2D volumes: one plane laid out as the axial one (RAS x to the left, RAS y up), so an image read
  from a PNG through SimpleITK (LPS, identity direction) appears as stored.

Without an affine (:func:`view_planes` with ``affine=None``) the array is shown in voxel order:
the first remaining axis down, the second to the right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation
from torch import Tensor

__all__ = [
    "Orientation",
    "Plane",
    "canonical_coordinates",
    "canonical_orientation",
    "canonical_voxel_size",
    "central_slice",
    "plane_image",
    "plane_spacing",
    "slice_map",
    "to_canonical",
    "view_planes",
]


def _check_axis(ndim: int, axis: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [-{ndim}, {ndim}) for a {ndim}D image; got {axis}")
    return axis % ndim


def central_slice(x: Tensor, axis: int = 0, index: int | None = None) -> np.ndarray:
    """A 2D float64 numpy view of ``x: (*S)`` (2D returned as is; 3D sliced at ``index`` along
    ``axis``, the middle by default)."""
    arr = x.detach().to("cpu").double().numpy()
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"expected a 2D or 3D spatial array; got shape {tuple(arr.shape)}")
    axis = _check_axis(3, axis)
    index = arr.shape[axis] // 2 if index is None else int(index)
    return np.take(arr, index, axis=axis)


def slice_map(phi: Tensor, axis: int = 0, index: int | None = None) -> np.ndarray:
    """In-plane components of a map ``phi: (D, *S)`` on the slice of :func:`central_slice`;
    returns ``(2, H, W)`` (for 3D the two components along the in-plane axes)."""
    d = phi.shape[0]
    if d == 2:
        return np.stack([central_slice(phi[0]), central_slice(phi[1])])
    axis = _check_axis(3, axis)
    keep = [a for a in range(3) if a != axis]
    return np.stack([central_slice(phi[a], axis, index) for a in keep])


# ---------------------------------------------------------------------------------------------
# radiological planes from the world affine


@dataclass(frozen=True)
class Plane:
    """How one plane of a canonical volume is laid out on screen.

    ``normal``: the canonical axis sliced (None for 2D); ``rows``/``cols``: the canonical axes
    shown downwards / to the right, reversed (high coordinate first) where ``flip_rows`` /
    ``flip_cols``; ``letters``: the anatomical directions at the (left, right, top, bottom)
    edges, None in voxel order.
    """

    name: str
    normal: int | None
    rows: int
    cols: int
    flip_rows: bool = False
    flip_cols: bool = False
    letters: tuple[str, str, str, str] | None = None


# radiological: every plane shows its axes from the high coordinate (R, A, S) to the low one
RADIOLOGICAL_3D = (
    Plane("axial", 2, 1, 0, True, True, ("R", "L", "A", "P")),
    Plane("coronal", 1, 2, 0, True, True, ("R", "L", "S", "I")),
    Plane("sagittal", 0, 2, 1, True, True, ("A", "P", "S", "I")),
)
RADIOLOGICAL_2D = (Plane("in-plane", None, 1, 0, True, True, ("R", "L", "A", "P")),)
VOXEL_3D = (
    Plane("slice along axis 2", 2, rows=0, cols=1),
    Plane("slice along axis 1", 1, rows=0, cols=2),
    Plane("slice along axis 0", 0, rows=1, cols=2),
)
VOXEL_2D = (Plane("voxel order", None, rows=0, cols=1),)


def view_planes(dim: int, radiological: bool) -> tuple[Plane, ...]:
    """The planes of a figure: axial, coronal, sagittal (3D) or the one plane (2D) in the
    radiological layout, or their voxel-order counterparts."""
    if dim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D volume; got {dim} spatial dims")
    if radiological:
        return RADIOLOGICAL_3D if dim == 3 else RADIOLOGICAL_2D
    return VOXEL_3D if dim == 3 else VOXEL_2D


def canonical_orientation(affine: np.ndarray | None, dim: int) -> np.ndarray:
    """``(D, 2)`` orientation (nibabel's convention): voxel axis ``v`` becomes canonical axis
    ``ornt[v, 0]`` (0 = R, 1 = A, 2 = S), reversed where ``ornt[v, 1] == -1``. ``affine``:
    ``(4, 4)`` voxel index -> world RAS mm (a 2D volume uses its in-plane 2x2 block); None gives
    the identity (voxel order)."""
    if affine is None:
        return np.stack([np.arange(dim), np.ones(dim)], axis=1).astype(np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be (4, 4) voxel -> RAS mm; got {affine.shape}")
    small = np.eye(dim + 1)
    small[:dim, :dim] = affine[:dim, :dim]
    small[:dim, dim] = affine[:dim, 3]
    ornt = io_orientation(small)
    if not np.all(np.isfinite(ornt)):
        raise ValueError(f"affine has a degenerate voxel axis: {affine[:dim, :dim].tolist()}")
    return ornt


def to_canonical(x: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """``x: (*S)`` reordered and flipped to canonical voxel order ``(*S_c)`` (a view)."""
    return apply_orientation(np.asarray(x), ornt)


def canonical_voxel_size(affine: np.ndarray | None, dim: int, ornt: np.ndarray) -> np.ndarray:
    """Millimetres per voxel ``(D,)`` along the canonical axes (ones without an affine)."""
    if affine is None:
        return np.ones(dim)
    size = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:dim, :dim], axis=0)
    out = np.empty(dim)
    out[ornt[:, 0].astype(int)] = size
    return out


def canonical_coordinates(index_map: np.ndarray, ornt: np.ndarray) -> list[np.ndarray]:
    """A map ``(D, *S)`` whose values are voxel indices of its own grid, as canonical indices
    on the canonical grid: ``D`` arrays ``(*S_c)``, the ``w``-th the index along canonical axis
    ``w``."""
    dim, shape = index_map.shape[0], index_map.shape[1:]
    out: list[np.ndarray] = [np.empty(0)] * dim
    for v in range(dim):
        w, sign = int(ornt[v, 0]), ornt[v, 1]
        values = index_map[v] if sign > 0 else (shape[v] - 1) - index_map[v]
        out[w] = to_canonical(values, ornt)
    return out


@dataclass(frozen=True, eq=False)
class Orientation:
    """How a volume with ``affine`` (None: voxel order) becomes canonical: ``ornt`` (see
    :func:`canonical_orientation`) and the millimetres per voxel along the canonical axes."""

    ornt: np.ndarray
    voxel_size: np.ndarray
    radiological: bool

    @classmethod
    def of(cls, affine: np.ndarray | None, dim: int) -> Orientation:
        """The orientation of a ``dim``-D volume with ``(4, 4)`` ``affine`` (or None)."""
        ornt = canonical_orientation(affine, dim)
        return cls(ornt, canonical_voxel_size(affine, dim, ornt), affine is not None)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x: (*S)`` in canonical order (a view)."""
        return to_canonical(x, self.ornt)


def plane_image(canonical: np.ndarray, plane: Plane, index: int | None = None) -> np.ndarray:
    """The 2D image ``(H, W)`` of ``plane`` in a canonical volume ``(*S_c)``, sliced at
    ``index`` along ``plane.normal`` (the middle by default)."""
    arr = np.asarray(canonical)
    if plane.normal is not None:
        if arr.ndim != 3:
            raise ValueError(f"plane {plane.name!r} needs a 3D volume; got {arr.shape}")
        index = arr.shape[plane.normal] // 2 if index is None else int(index)
        arr = np.take(arr, index, axis=plane.normal)
        keep = [a for a in range(3) if a != plane.normal]
        rows, cols = keep.index(plane.rows), keep.index(plane.cols)
    else:
        if arr.ndim != 2:
            raise ValueError(f"plane {plane.name!r} needs a 2D image; got {arr.shape}")
        rows, cols = plane.rows, plane.cols
    arr = np.transpose(arr, (rows, cols))
    if plane.flip_rows:
        arr = arr[::-1]
    if plane.flip_cols:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr)


def plane_spacing(voxel_size: Sequence[float], plane: Plane) -> tuple[float, float]:
    """Millimetres per pixel ``(row, column)`` of ``plane`` (canonical ``voxel_size``)."""
    return float(voxel_size[plane.rows]), float(voxel_size[plane.cols])
