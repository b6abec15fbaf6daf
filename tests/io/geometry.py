"""Test geometries: anisotropic, rotated and flipped ITK (LPS) grids and SimpleITK images."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk


def rot_z(deg: float, dim: int = 3) -> np.ndarray:
    """Rotation about z (in 2D: the in-plane rotation) by ``deg`` degrees."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    r = np.eye(dim)
    r[:2, :2] = [[c, -s], [s, c]]
    return r


def rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def flip(axis: int, dim: int = 3) -> np.ndarray:
    f = np.eye(dim)
    f[axis, axis] = -1.0
    return f


# target and source geometries (ITK: LPS origin, spacing, direction)
TARGET_3D = dict(
    size=(20, 24, 16),
    spacing=(1.1, 0.9, 1.4),
    direction=rot_z(20) @ flip(1),
    origin=(5.0, -12.0, 30.0),
)
SOURCE_3D = dict(
    size=(18, 22, 14),
    spacing=(1.3, 1.0, 1.2),
    direction=rot_x(15) @ rot_z(-10) @ flip(0),
    origin=(-7.0, 4.0, 21.0),
)
TARGET_2D = dict(
    size=(26, 22),
    spacing=(0.9, 1.3),
    direction=rot_z(20, 2) @ flip(1, 2),
    origin=(3.0, -8.0),
)
SOURCE_2D = dict(
    size=(24, 28),
    spacing=(1.2, 0.8),
    direction=rot_z(-35, 2),
    origin=(-6.0, 11.0),
)


def make_sitk(array_index_order: np.ndarray, geometry: dict) -> sitk.Image:
    """SimpleITK image from an array in index order ``(X, Y[, Z])`` and an ITK geometry."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_index_order.T))
    img.SetSpacing(tuple(float(s) for s in geometry["spacing"]))
    img.SetOrigin(tuple(float(o) for o in geometry["origin"]))
    img.SetDirection(tuple(np.asarray(geometry["direction"], dtype=float).ravel()))
    return img


def sitk_array(img: sitk.Image) -> np.ndarray:
    """Array of a scalar SimpleITK image in index order."""
    return sitk.GetArrayFromImage(img).T


def smooth_image(shape) -> np.ndarray:
    """A smooth float32 test image in index order with values in about [0, 3]."""
    axes = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    f = 1.5 + 0.6 * np.sin(axes[0] / 3.1) + 0.5 * np.cos(axes[1] / 3.7)
    if len(shape) == 3:
        f = f + 0.4 * np.sin(axes[2] / 2.9 + 0.3)
    return f.astype(np.float32)


def lps(points: np.ndarray) -> np.ndarray:
    """RAS <-> LPS for ``(N, D)`` points (negate the first two components)."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :2] *= -1.0
    return out
