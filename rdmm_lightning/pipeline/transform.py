"""A saved registration folder used as a transform: warping images, label maps and points.

Directions (``T``: the registration's pull-back, target world -> source world):

* images, forward (default): a *source-space* image (any grid) is resampled into the **target**
  grid with ``displacement.nii.gz``: ``out(p) = moving(T(p))``;
* images, ``inverse=True``: a *target-space* image is resampled into the **source** grid with
  ``inverse_displacement.nii.gz``: ``out(y) = moving(T^{-1}(y))``;
* points, forward (default): **target** points -> **source** points, ``p -> T(p)`` (the same
  field that resamples images, as in ITK/ANTs: resampling pulls values back along it);
* points, ``inverse=True``: **source** points -> **target** points, ``y -> T^{-1}(y)``.

Point files are CSV with a header ``x,y,z`` (3D) or ``x,y`` (2D), in ITK's physical (**LPS**) mm
by default, as SimpleITK's ``TransformPoint`` and ANTs' ``antsApplyTransformsToPoints`` use;
other columns are copied through.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import (
    Volume,
    read_displacement,
    read_image,
    read_label_map,
    warp_points,
    write_volume,
)
from ..io.volume import ITK_SUFFIXES
from ..options import Coordinates, either, values
from ..runtime import choose_num_threads, num_threads, requested_threads, resolve_device
from .atomic import check_output_file, staged_file
from .physical import sample_volume

__all__ = [
    "LabelMapWarning",
    "RegistrationTransform",
    "label_like_values",
    "load_transform",
    "map_points",
    "transform_points",
    "warp_file",
    "warp_image",
    "warp_points_csv",
    "warp_volume",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii") + ITK_SUFFIXES
COORDINATES = values(Coordinates)


@dataclass
class RegistrationTransform:
    """The two displacement fields of a registration folder (``(D, *S)`` RAS mm in memory).

    Attributes:
        forward: ``displacement.nii.gz`` on the target grid (target -> source positions).
        inverse: ``inverse_displacement.nii.gz`` on the source grid, or None if absent.
        path: the folder.
    """

    forward: Volume
    inverse: Volume | None
    path: str

    @property
    def dim(self) -> int:
        return self.forward.dim

    def field(self, inverse: bool) -> Volume:
        """The field that maps in the requested direction (see the module docstring)."""
        if not inverse:
            return self.forward
        if self.inverse is None:
            raise ValueError(f"{self.path}: no inverse_displacement.nii.gz (needed for --inverse)")
        return self.inverse


def load_transform(transform_dir: str | os.PathLike) -> RegistrationTransform:
    """Read ``displacement.nii.gz`` (required) and ``inverse_displacement.nii.gz`` (optional)
    from a folder written by ``rdmm register`` / ``rdmm infer``."""
    folder = Path(transform_dir)
    if not folder.is_dir():
        raise ValueError(f"{transform_dir}: not a registration output folder (no such folder)")
    fwd_path = folder / "displacement.nii.gz"
    if not fwd_path.is_file():
        raise ValueError(f"{transform_dir}: no displacement.nii.gz (not a registration folder?)")
    forward = read_displacement(fwd_path)
    inv_path = folder / "inverse_displacement.nii.gz"
    inverse = read_displacement(inv_path) if inv_path.is_file() else None
    if inverse is not None and inverse.dim != forward.dim:
        raise ValueError(f"{inv_path}: {inverse.dim}D, but displacement.nii.gz is {forward.dim}D")
    return RegistrationTransform(forward, inverse, os.fspath(transform_dir))


def _as_transform(transform: RegistrationTransform | str | os.PathLike) -> RegistrationTransform:
    if isinstance(transform, RegistrationTransform):
        return transform
    return load_transform(transform)


def warp_volume(
    transform: RegistrationTransform | str | os.PathLike,
    moving: Volume,
    *,
    labels: bool = False,
    inverse: bool = False,
    device: str | torch.device | None = "cpu",
    threads: int | None = None,
) -> Volume:
    """Resample ``moving`` (source space; target space with ``inverse``) onto the field's grid.

    Images: (bi/tri)linear, float32 (``file_dtype`` float32), 0 outside ``moving``. Label maps
    (``labels=True``, integer ``moving.data``): nearest neighbour, the stored integer type kept.
    Returns a :class:`Volume` on the target grid (source grid with ``inverse``), on the CPU.
    ``device`` (``"auto"``, ``"cpu"``, ``"cuda[:N]"``) computes there; ``threads``: intra-op
    threads (None: :func:`~rdmm_lightning.runtime.choose_num_threads` for the field's grid).
    """
    tr = _as_transform(transform)
    field = tr.field(inverse)
    name = moving.path or "moving image"
    if moving.dim != field.dim:
        raise ValueError(f"{name}: {moving.dim}D image, but the transform is {field.dim}D")
    if labels and torch.is_floating_point(moving.data):
        raise ValueError(f"{name}: label maps must hold integers")
    dev = resolve_device(device)
    threads = choose_num_threads(threads, math.prod(field.shape))
    with torch.no_grad(), num_threads(threads):
        p = field.grid().world_points(dev)
        q = p + field.data.to(dev, torch.float64).unsqueeze(0)
        out = sample_volume(moving, q, labels=labels)[0].cpu()
    if labels:
        stored = moving.file_dtype
        dtype = stored if stored and np.dtype(stored).kind in "iu" else None
        return Volume(out, field.affine, None, dtype)
    return Volume(out.float(), field.affine, None, "float32")


class LabelMapWarning(UserWarning):
    """An image that looks like a label map was resampled linearly (see
    :func:`label_like_values`)."""


LABEL_LIKE_MAX_VALUES = 256


def label_like_values(volume: Volume) -> int | None:
    """The number of distinct values of ``volume`` if it looks like a label map, else None.

    It does when it is integer-typed (stored as integers, ``file_dtype``, or holding integer
    data) with at most :data:`LABEL_LIKE_MAX_VALUES` distinct values that are few (<= 64) or
    sparse (fewer than half of the integers between the smallest and the largest): label codes,
    unlike 8-bit intensities, which fill their range.
    """
    stored = volume.file_dtype
    if stored is not None:
        integer = np.dtype(stored).kind in "iub"
    else:
        integer = not torch.is_floating_point(volume.data)
    if not integer or volume.data.numel() == 0:
        return None
    flat = volume.data.reshape(-1)
    if torch.unique(flat[::7]).numel() > LABEL_LIKE_MAX_VALUES:  # cheap early exit
        return None
    values = torch.unique(flat)
    count = values.numel()
    span = float(values[-1]) - float(values[0]) + 1.0
    if count > LABEL_LIKE_MAX_VALUES or (count > 64 and count >= span / 2):
        return None
    return count


def warp_image(
    transform: RegistrationTransform | str | os.PathLike,
    moving: str | os.PathLike | Volume,
    out: str | os.PathLike | None = None,
    *,
    labels: bool = False,
    inverse: bool = False,
    device: str | torch.device | None = "cpu",
    threads: int | None = None,
) -> Volume:
    """Apply a registration folder to an image or label map (file or :class:`Volume`) in
    physical space; ``rdmm warp --moving`` and :func:`rdmm_lightning.warp`.

    Forward (default): ``moving`` lives in the source's space (any grid, e.g. another modality
    of the source subject) and is resampled into the target grid with ``displacement.nii.gz``.
    ``inverse=True``: ``moving`` lives in the target's space and is resampled into the source
    grid with ``inverse_displacement.nii.gz``. ``labels=True``: nearest neighbour, integer
    type kept. ``device`` and ``threads`` as in :func:`warp_volume` (checked before any file is
    read). Writes ``out`` (NIfTI or an ITK format) when given, only on success.
    """
    if out is not None:
        check_output_file(out, IMAGE_SUFFIXES)
    requested_threads(threads)
    dev = resolve_device(device)
    tr = _as_transform(transform)
    tr.field(inverse)  # fail early without the inverse field
    if not isinstance(moving, Volume):
        moving = read_label_map(moving) if labels else read_image(moving)
    count = None if labels else label_like_values(moving)
    if count is not None:
        warnings.warn(
            f"{moving.path or 'moving image'}: integer image with {count} distinct values "
            "resampled linearly; if it is a label map, use --labels (labels=True) for nearest "
            "neighbour",
            LabelMapWarning,
            stacklevel=2,
        )
    warped = warp_volume(tr, moving, labels=labels, inverse=inverse, device=dev, threads=threads)
    if out is not None:
        with staged_file(out) as tmp:
            write_volume(tmp, warped.data, warped.affine, warped.file_dtype)
    return warped


def warp_file(
    transform_dir: str | os.PathLike,
    moving: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labels: bool = False,
    inverse: bool = False,
    threads: int | None = None,
) -> str:
    """:func:`warp_image` of a file into the file ``out`` (on the CPU); returns its path."""
    warp_image(transform_dir, moving, out, labels=labels, inverse=inverse, threads=threads)
    return os.fspath(out)


def transform_points(
    transform: RegistrationTransform | str | os.PathLike,
    points: np.ndarray | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    inverse: bool = False,
    coordinates: str = "lps",
    threads: int | None = None,
) -> np.ndarray | str:
    """Map physical points with a registration folder; ``rdmm warp --points`` and
    :func:`rdmm_lightning.warp`. ``points``: an ``(N, D)`` array (returns the mapped array,
    :func:`map_points`) or a CSV file (written to ``out``, its path returned,
    :func:`warp_points_csv`). Runs with ``threads`` intra-op threads (None: ``RDMM_NUM_THREADS``
    or one: light work)."""
    if isinstance(points, (str, os.PathLike)) and out is None:
        raise ValueError("a points CSV needs an output file (out)")
    with num_threads(choose_num_threads(threads, 1)):
        if isinstance(points, (str, os.PathLike)):
            return warp_points_csv(transform, points, out, inverse=inverse, coordinates=coordinates)
        return map_points(transform, np.asarray(points), inverse=inverse, coordinates=coordinates)


def _flip(points: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :2] *= -1.0
    return out


def map_points(
    transform: RegistrationTransform | str | os.PathLike,
    points: np.ndarray,
    *,
    inverse: bool = False,
    coordinates: str = "lps",
) -> np.ndarray:
    """Map physical points ``(N, D)``: target -> source (default) or source -> target
    (``inverse=True``). ``coordinates``: ``"lps"`` (ITK) or ``"ras"`` (nibabel). Outside the
    field's grid the displacement is zero, as in ITK. Returns ``(N, D)`` float64."""
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be {either(Coordinates)}; got {coordinates!r}")
    tr = _as_transform(transform)
    field = tr.field(inverse)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != field.dim:
        raise ValueError(f"points must be (N, {field.dim}); got {pts.shape}")
    ras = _flip(pts) if coordinates == "lps" else pts
    out = warp_points(ras, field.data, field.affine, outside="itk")
    return _flip(out) if coordinates == "lps" else out


def _read_points(path: str, dim: int) -> tuple[list[str], list[dict[str, str]], np.ndarray]:
    """Header, rows and the ``(N, D)`` coordinates of a point CSV."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: file not found")
    axes = ("x", "y", "z")[:dim]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [a for a in axes if a not in header]
        if missing:
            raise ValueError(
                f"{path}: needs columns {','.join(axes)} for a {dim}D transform "
                f"(header: {','.join(header) or 'none'})"
            )
        if dim == 2 and "z" in header:
            raise ValueError(f"{path}: has a z column, but the transform is 2D")
        rows = list(reader)
    coords = np.zeros((len(rows), dim))
    for n, row in enumerate(rows):
        for d, a in enumerate(axes):
            try:
                coords[n, d] = float(row[a])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: line {n + 2}: {a}={row[a]!r} is not a number") from None
    if not np.all(np.isfinite(coords)):
        raise ValueError(f"{path}: coordinates must be finite numbers")
    return header, rows, coords


def _count_outside(field: Volume, ras: np.ndarray) -> int:
    """Number of points ``(N, D)`` more than half a voxel outside the field's grid."""
    if len(ras) == 0:
        return 0
    grid = field.grid()
    inside = grid.inside_itk_buffer(grid.world_to_index(ras))
    return int((~inside).sum())


def warp_points_csv(
    transform_dir: str | os.PathLike,
    points_csv: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    inverse: bool = False,
    coordinates: str = "lps",
) -> str:
    """Map the points of a CSV file (header ``x,y,z`` or ``x,y``, physical mm).

    Default: ``points_csv`` holds **target** points, ``out_csv`` gets their **source** positions
    (``displacement.nii.gz``). ``inverse=True``: source points -> target positions
    (``inverse_displacement.nii.gz``). Coordinates are LPS (ITK) unless ``coordinates="ras"``.
    Other columns are copied; ``out_csv`` is written only on success. Returns its path.
    """
    check_output_file(out_csv, (".csv",))
    tr = _as_transform(transform_dir)
    field = tr.field(inverse)
    header, rows, coords = _read_points(os.fspath(points_csv), tr.dim)
    mapped = map_points(tr, coords, inverse=inverse, coordinates=coordinates) if rows else coords
    outside = _count_outside(field, _flip(coords) if coordinates == "lps" else coords)
    if outside:
        log.warning("%d of %d points lie outside the field's grid (not moved)", outside, len(rows))
    with staged_file(out_csv) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            for row, point in zip(rows, mapped):
                for d, a in enumerate(("x", "y", "z")[: tr.dim]):
                    row[a] = repr(float(point[d]))
                writer.writerow(row)
    return os.fspath(out_csv)
