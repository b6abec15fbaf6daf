"""2D views of 2D/3D tensors for figures."""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["central_slice", "slice_map"]


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
