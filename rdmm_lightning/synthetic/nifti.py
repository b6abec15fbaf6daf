"""Writing the built-in synthetic datasets: grids, NIfTI files and the output folder.

Arrays are stored in voxel order ``(X, Y)`` or ``(X, Y, Z)``; the affine maps voxel indices to
RAS+ millimetres (``+x`` right, ``+y`` anterior, ``+z`` superior). Files are written by the
package's one image writer (:func:`rdmm_lightning.io.write_volume`: qform and sform both set,
code 1, so nibabel, SimpleITK and torchio agree on the geometry) and read back with
:func:`rdmm_lightning.io.read_image`. Gzipped output is byte-reproducible (nibabel writes a zero
gzip timestamp).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..grid import ras_affine
from ..io import write_volume

__all__ = [
    "ras_affine",
    "centered_origin",
    "save_nifti",
    "prepare_output_dir",
    "DatasetDirError",
]


class DatasetDirError(ValueError):
    """The output folder cannot be used for a dataset (a file, or a non-empty foreign folder)."""


def centered_origin(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, ...]:
    """Origin (mm) that puts the centre of a grid of ``shape`` at the world origin."""
    return tuple(-0.5 * (int(n) - 1) * float(s) for n, s in zip(shape, spacing))


def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a 2D ``(X, Y)`` or 3D ``(X, Y, Z)`` array, its dtype kept, on the grid ``affine``
    (default identity) with :func:`rdmm_lightning.io.write_volume`. Returns the path."""
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"array must be 2D or 3D; got shape {array.shape}")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    return Path(write_volume(path, array, affine, dtype=array.dtype))


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
