"""Test volumes stored in other axis orders than RAS: the same world content, re-stored."""

from __future__ import annotations

import numpy as np

AXIS_OF = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def storage(codes: str, ras_shape: tuple[int, ...]) -> np.ndarray:
    """``(4, 4)`` matrix ``M`` taking a stored voxel index (orientation ``codes``, e.g. "PSR": the
    first stored axis runs towards posterior) to the RAS-stored index of the same voxel."""
    m = np.eye(4)
    m[: len(codes), : len(codes)] = 0.0
    for k, code in enumerate(codes):
        axis, sign = AXIS_OF[code]
        m[axis, k] = sign
        if sign < 0:
            m[axis, 3] = ras_shape[axis] - 1
    return m


def restore(x: np.ndarray, codes: str) -> np.ndarray:
    """A RAS-stored array ``(*S)`` stored in the orientation ``codes``."""
    perm = [AXIS_OF[c][0] for c in codes]
    out = np.transpose(x, perm)
    flips = tuple(k for k, c in enumerate(codes) if AXIS_OF[c][1] < 0)
    return np.ascontiguousarray(np.flip(out, flips)) if flips else np.ascontiguousarray(out)


def restore_index_map(index_map: np.ndarray, codes: str) -> np.ndarray:
    """A map ``(D, *S)`` of RAS-stored voxel indices as the map of the re-stored grid (stored
    indices, on the stored grid)."""
    shape = index_map.shape[1:]
    out = []
    for code in codes:
        axis, sign = AXIS_OF[code]
        values = index_map[axis] if sign > 0 else (shape[axis] - 1) - index_map[axis]
        out.append(restore(values, codes))
    return np.stack(out)


def stored_affine(ras_affine: np.ndarray, codes: str, ras_shape: tuple[int, ...]) -> np.ndarray:
    """The affine of the re-stored grid (same world positions as ``ras_affine``)."""
    return ras_affine @ storage(codes, ras_shape)
