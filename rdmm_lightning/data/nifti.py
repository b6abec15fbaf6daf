"""Minimal NIfTI writing helpers for the built-in synthetic datasets.

Arrays are stored in voxel order ``(X, Y)`` or ``(X, Y, Z)``; the affine maps voxel indices to
RAS+ millimetres (``+x`` right, ``+y`` anterior, ``+z`` superior). qform and sform are both set
(code 1, "scanner") so nibabel, SimpleITK and torchio agree on the geometry. Gzipped output is
byte-reproducible (nibabel writes a zero gzip timestamp).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "ras_affine",
    "centered_origin",
    "save_nifti",
    "load_nifti",
    "prepare_output_dir",
    "DatasetDirError",
]


class DatasetDirError(ValueError):
    """The output folder cannot be used for a dataset (a file, or a non-empty foreign folder)."""


def ras_affine(spacing: Sequence[float], origin: Sequence[float] | None = None) -> np.ndarray:
    """Affine ``(4, 4)``: diagonal ``spacing`` (2 or 3 entries, mm) plus ``origin`` (mm).

    A 2-entry spacing gets unit spacing along the third axis; a missing origin is zero.
    """
    sp = [float(s) for s in spacing]
    if len(sp) not in (2, 3) or min(sp) <= 0:
        raise ValueError(f"spacing must have 2 or 3 positive entries; got {spacing}")
    sp += [1.0] * (3 - len(sp))
    org = [0.0, 0.0, 0.0] if origin is None else [float(o) for o in origin]
    if len(org) > 3:
        raise ValueError(f"origin must have at most 3 entries; got {origin}")
    org += [0.0] * (3 - len(org))
    affine = np.diag(sp + [1.0])
    affine[:3, 3] = org
    return affine


def centered_origin(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, ...]:
    """Origin (mm) that puts the centre of a grid of ``shape`` at the world origin."""
    return tuple(-0.5 * (int(n) - 1) * float(s) for n, s in zip(shape, spacing))


def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a 2D ``(X, Y)`` or 3D ``(X, Y, Z)`` array (dtype kept) with ``affine`` (default
    identity), qform/sform code 1 and millimetre units. Returns the path."""
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"array must be 2D or 3D; got shape {array.shape}")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(array.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path = Path(path)
    nib.save(img, str(path))
    return path


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(array in its stored dtype, affine (4, 4))``."""
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine


def prepare_output_dir(out_dir: str | Path, marker: str) -> Path:
    """Create ``out_dir`` or accept it if empty or already holding a dataset (``marker`` file).

    Raises:
        DatasetDirError: ``out_dir`` is a file, or a non-empty folder without ``marker``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetDirError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise DatasetDirError(f"{out} is not empty and holds no {marker}; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    return out
