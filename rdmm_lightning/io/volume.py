"""Images, label maps and vector fields in physical space: the one :class:`Volume` type (a
TorchIO image) and the one reader of image files.

Conventions
-----------
* ``Volume.data`` is ``(C, *S)`` with ``S = (X, Y)`` or ``(X, Y, Z)`` in file index order
  (NIfTI/ITK ``i, j, k``; *not* numpy's reversed order of SimpleITK arrays).
* ``Volume.affine`` is a ``(4, 4)`` float64 matrix mapping a voxel index ``(i, j, k, 1)`` to world
  **RAS** millimetres (the nibabel convention). 2D volumes keep a 4x4 affine; their index is
  ``(i, j, 0)`` and their world coordinates are the first two RAS components (what ITK does with a
  2D NIfTI: it keeps the in-plane 2x2 block). :meth:`Volume.grid` gives the volume's
  :class:`~rdmm_lightning.grid.Grid` (index / world / domain coordinates).
* ``Volume.image`` is the TorchIO image holding both (``tio.LabelMap`` for integer data,
  ``tio.ScalarImage`` otherwise; TorchIO's ``(C, X, Y, Z)`` tensor, ``Z = 1`` for 2D volumes), so a
  volume goes through TorchIO transforms as it is (:mod:`rdmm_lightning.io.preprocessing`, the data
  modules) and :meth:`Volume.from_torchio` turns the result back.
* ITK/SimpleITK physical space is **LPS**: ``p_LPS = diag(-1, -1, 1) p_RAS``. Readers and writers
  that go through SimpleITK convert origin/direction/spacing with :func:`affine_from_itk` and
  :func:`itk_from_affine`.

Files are read by :func:`read_image` and :func:`read_label_map` (one loader: NIfTI through
nibabel, which raises on a truncated ``.nii.gz`` where SimpleITK fills zeros; NRRD, MetaImage and
the 2D formats PNG, JPEG, BMP and TIFF through SimpleITK). Every problem is a one-line
ValueError that starts with the file's path. TorchIO is imported when the first volume is made.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..grid import Grid, resampled_affine, voxel_size_mm
from ..ops.resample import resample_image

if TYPE_CHECKING:  # pragma: no cover
    import torchio as tio

__all__ = [
    "Volume",
    "read_image",
    "read_label_map",
    "affine_from_itk",
    "itk_from_affine",
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "IMAGE_2D_SUFFIXES",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class Volume:
    """An image, label map or vector field on a voxel grid in physical space, held as one
    TorchIO image (see the module docstring).

    Args:
        data: ``(C, *S)``; float32 for images (C = 1), int64 for label maps (C = 1),
            ``C = D`` for displacement fields.
        affine: ``(4, 4)`` voxel index -> world RAS mm.
        path: the file it was read from, if any.
        file_dtype: numpy dtype name of the data as stored in the file (e.g. ``"int16"``), so that
            outputs can keep it.
    """

    __slots__ = ("image", "dim", "path", "file_dtype")

    def __init__(
        self,
        data: Tensor,
        affine: np.ndarray,
        path: str | None = None,
        file_dtype: str | None = None,
    ) -> None:
        import torchio as tio

        if not isinstance(data, Tensor) or data.dim() not in (3, 4):
            got = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"data must be (C, *S) with 2 or 3 spatial dims; got {got}")
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be (4, 4); got {affine.shape}")
        kind = tio.ScalarImage if torch.is_floating_point(data) else tio.LabelMap
        tensor = data.unsqueeze(-1) if data.dim() == 3 else data
        self.image: tio.Image = kind(tensor=tensor, affine=affine)
        self.dim = data.dim() - 1
        self.path = path
        self.file_dtype = file_dtype

    @classmethod
    def from_torchio(
        cls,
        image: tio.Image,
        dim: int | None = None,
        path: str | None = None,
        file_dtype: str | None = None,
    ) -> Volume:
        """Wrap a TorchIO image ``(C, X, Y, Z)``; ``dim`` 2 or 3 (default: 2 when ``Z = 1``)."""
        dim = (2 if image.shape[-1] == 1 else 3) if dim is None else int(dim)
        if dim not in (2, 3) or (dim == 2 and image.shape[-1] != 1):
            raise ValueError(f"cannot read a {dim}D volume from a TorchIO image {image.shape}")
        volume = cls.__new__(cls)
        volume.image, volume.dim, volume.path, volume.file_dtype = image, dim, path, file_dtype
        return volume

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, channels={self.image.shape[0]}, "
            f"dtype={self.image.data.dtype}, path={self.path!r})"
        )

    @property
    def data(self) -> Tensor:
        """``(C, *S)`` (a view of the TorchIO tensor)."""
        tensor = self.image.data
        return tensor[..., 0] if self.dim == 2 else tensor

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` voxel index -> world RAS mm."""
        return self.image.affine

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``S``."""
        return tuple(self.image.shape[1 : 1 + self.dim])

    @property
    def voxel_size_mm(self) -> tuple[float, ...]:
        """Millimetres per voxel along each spatial axis (column norms of the affine)."""
        return voxel_size_mm(self.affine, self.dim)

    def grid(self, spacing_mode: str = "parity") -> Grid:
        """This volume's grid with the domain spacing of ``spacing_mode``."""
        return Grid.from_affine(self.shape, self.affine, spacing_mode)

    def batch(self) -> Tensor:
        """Data as a ``(1, C, *S)`` batch."""
        return self.data.unsqueeze(0)

    def resize(
        self, shape: Sequence[int], *, antialias: bool = False, nearest: bool | None = None
    ) -> Volume:
        """This volume on a grid of spatial ``shape`` over the same field of view
        (:meth:`Grid.resize <rdmm_lightning.grid.Grid.resize>`: corners aligned, the first and
        last voxel centres keep their world positions).

        Integer data (labels) use nearest neighbour, float data (bi/tri)linear interpolation
        (optionally Gaussian anti-aliasing when downsampling, ``antialias=True``); ``nearest``
        overrides the choice. ``path`` and ``file_dtype`` are kept.
        """
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.dim:
            raise ValueError(f"shape must have {self.dim} entries; got {shape}")
        affine = resampled_affine(self.affine, self.shape, shape)
        data = self.data
        if shape == self.shape:
            return Volume(data, affine, self.path, self.file_dtype)
        use_nearest = (not torch.is_floating_point(data)) if nearest is None else nearest
        if use_nearest:
            out = data
            for d, (n, m) in enumerate(zip(self.shape, shape)):
                out = out.index_select(d + 1, _nearest_indices(n, m, data.device))
        else:
            work = data if torch.is_floating_point(data) else data.to(torch.float32)
            out = resample_image(work.unsqueeze(0), shape, antialias=antialias).squeeze(0)
        return Volume(out.contiguous(), affine, self.path, self.file_dtype)


def _nearest_indices(n: int, m: int, device: torch.device) -> Tensor:
    pos = torch.arange(m, dtype=torch.float64, device=device) * ((n - 1) / (m - 1))
    return torch.floor(pos + 0.5).long().clamp_(0, n - 1)


# ---------------------------------------------------------------------------------------------
# ITK (LPS origin / direction / spacing) <-> RAS affine


def _lps_flip(dim: int) -> np.ndarray:
    return np.diag([-1.0, -1.0] + [1.0] * (dim - 2))


def affine_from_itk(origin, spacing, direction) -> np.ndarray:
    """RAS ``(4, 4)`` affine from ITK geometry (LPS ``origin`` (D,), ``spacing`` (D,), row-major
    ``direction`` (D*D,) or (D, D)), ``D`` in {2, 3}; a 2D geometry is embedded in 4x4."""
    origin = np.asarray(origin, dtype=np.float64)
    dim = origin.shape[0]
    spacing = np.asarray(spacing, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64).reshape(dim, dim)
    flip = _lps_flip(dim)
    affine = np.eye(4)
    affine[:dim, :dim] = flip @ direction @ np.diag(spacing)
    affine[:dim, 3] = flip @ origin
    return affine


def itk_from_affine(
    affine: np.ndarray, dim: int = 3, tol: float = 1e-4
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """ITK geometry ``(origin, spacing, direction)`` in LPS for the first ``dim`` axes of a RAS
    affine. Raises ValueError if the axes are not orthogonal (ITK cannot store shear)."""
    affine = np.asarray(affine, dtype=np.float64)
    flip = _lps_flip(dim)
    lin = flip @ affine[:dim, :dim]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length axis: {affine.tolist()}")
    direction = lin / spacing
    if np.abs(direction.T @ direction - np.eye(dim)).max() > tol:
        raise ValueError("affine has non-orthogonal axes (shear), which ITK files cannot store")
    origin = flip @ affine[:dim, 3]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


# ---------------------------------------------------------------------------------------------
# low-level readers: return (array in index order, affine, stored dtype)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    itk = re.search(r"ITK ERROR: \w+\(0x[0-9a-fA-F]+\): (.*)", text)
    text = itk.group(1) if itk else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suffix(path: str) -> str:
    name = os.path.basename(path).lower()
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def _check_file(path: str) -> str:
    if not os.path.exists(path):
        raise ValueError(f"{path}: file not found")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    suffix = _suffix(path)
    supported = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES
    if suffix not in supported:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r} (supported: {', '.join(supported)})"
        )
    return suffix


def _load_nifti(path: str) -> tuple[np.ndarray, np.ndarray, str, int]:
    import nibabel as nib

    img = nib.load(path)
    arr = np.zeros(img.shape) if 0 in img.shape else np.asanyarray(img.dataobj)
    return arr, np.asarray(img.affine, dtype=np.float64), str(img.get_data_dtype()), 0


def _load_itk(path: str) -> tuple[np.ndarray, np.ndarray, str, int]:
    """SimpleITK image as an index-order array ``(*size[, C])``, RAS affine, stored dtype and the
    number of vector components ``C`` (0 for scalar images)."""
    import SimpleITK as sitk

    img = sitk.ReadImage(path)
    dim = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    arr = sitk.GetArrayFromImage(img)  # (*size reversed[, ncomp])
    nsp = arr.ndim - (1 if ncomp > 1 else 0)
    arr = np.transpose(arr, tuple(range(nsp - 1, -1, -1)) + tuple(range(nsp, arr.ndim)))
    gdim = min(dim, 3)
    origin = np.asarray(img.GetOrigin())[:gdim]
    spacing = np.asarray(img.GetSpacing())[:gdim]
    direction = np.asarray(img.GetDirection()).reshape(dim, dim)[:gdim, :gdim]
    affine = affine_from_itk(origin, spacing, direction)
    return arr, affine, str(arr.dtype), ncomp if ncomp > 1 else 0


def _load(path: str) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Array (index order), RAS affine, stored dtype, number of vector components (0: scalar)."""
    suffix = _check_file(path)
    try:
        loader = _load_nifti if suffix in NIFTI_SUFFIXES else _load_itk
        arr, affine, dtype, ncomp = loader(path)
    except ValueError as exc:
        raise ValueError(f"{path}: cannot read image ({_one_line(exc)})") from exc
    except Exception as exc:  # corrupt files raise anything from gzip, nibabel or ITK
        raise ValueError(
            f"{path}: cannot read image, corrupt or unreadable ({_one_line(exc)})"
        ) from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: unsupported voxel type {arr.dtype} (need real scalars)")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{path}: degenerate voxel-to-world affine {affine.tolist()}")
    return arr, affine, dtype, ncomp


def _spatial_array(arr: np.ndarray, path: str, ncomp: int) -> np.ndarray:
    """Reduce a scalar image array to 2 or 3 spatial axes, or raise ValueError."""
    if ncomp:
        raise ValueError(
            f"{path}: vector image with {ncomp} components per voxel is not supported "
            "(a colour image? save it as grey levels; a displacement field? use read_displacement)"
        )
    if 0 in arr.shape:
        raise ValueError(f"{path}: image has a zero-size axis, shape {arr.shape}")
    if arr.ndim < 2:
        raise ValueError(f"{path}: image must have 2 or 3 spatial dims; got shape {arr.shape}")
    if arr.ndim > 3:
        extra = arr.shape[3:]
        if all(n == 1 for n in extra):
            arr = arr.reshape(arr.shape[:3])
        elif arr.ndim == 4:
            raise ValueError(
                f"{path}: 4D image with {arr.shape[3]} volumes/channels is not supported "
                f"(shape {arr.shape}; only single 2D/3D images)"
            )
        else:
            raise ValueError(
                f"{path}: {arr.ndim}D image of shape {arr.shape} is not supported "
                "(more than 3 spatial dims or vector data; a displacement field? use "
                "read_displacement)"
            )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if min(arr.shape) < 2:
        raise ValueError(f"{path}: every spatial axis needs >= 2 voxels; got shape {arr.shape}")
    return arr


def read_image(path: str | os.PathLike) -> Volume:
    """Read a 2D/3D intensity image (.nii, .nii.gz, .nrrd, .mha, .mhd, .png, .tif, ...) as float32.

    Returns a :class:`Volume` with ``data (1, *S)`` float32. A NIfTI array ``(X, Y)`` or
    ``(X, Y, 1)`` gives a 2D volume ``S = (X, Y)``; trailing singleton axes are dropped. 2D
    formats without a header (PNG, JPEG, BMP, TIFF) have 1 mm pixels at the origin, in ITK's
    LPS orientation (so their affine is ``diag(-1, -1, 1, 1)``).

    Raises:
        ValueError: (message starts with the path) missing, empty, corrupt or unreadable file,
            unsupported type, a 4D image with more than one volume, more than 3 spatial dims,
            vector images, zero-size or single-voxel axes, NaN/Inf values, degenerate affine.
    """
    path = os.fspath(path)
    arr, affine, dtype, ncomp = _load(path)
    arr = _spatial_array(arr, path, ncomp)
    data = arr.astype(np.float32)
    if not np.all(np.isfinite(data)):
        n_bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{path}: image contains {n_bad} NaN/Inf values")
    return Volume(torch.from_numpy(np.ascontiguousarray(data)).unsqueeze(0), affine, path, dtype)


def read_label_map(
    path: str | os.PathLike, reference: Volume | None = None, *, atol_mm: float = 1e-3
) -> Volume:
    """Read an integer label map; ``data (1, *S)`` int64.

    Float files are accepted when every value is an integer (within 1e-3). With ``reference``,
    the label map must lie on the same grid: equal spatial shape and affines equal within
    ``atol_mm``.

    Raises:
        ValueError: the errors of :func:`read_image`, non-integer values, or a grid mismatch.
    """
    path = os.fspath(path)
    arr, affine, dtype, ncomp = _load(path)
    arr = _spatial_array(arr, path, ncomp)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: label map contains NaN/Inf values")
        rounded = np.round(arr)
        err = np.abs(arr - rounded)
        if err.max() > 1e-3:
            bad = arr.ravel()[int(np.argmax(err))]
            raise ValueError(f"{path}: label map has non-integer values (e.g. {bad!r})")
        arr = rounded
    data = torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64))).unsqueeze(0)
    vol = Volume(data, affine, path, dtype)
    if reference is not None:
        ref_name = reference.path or "the reference image"
        if vol.shape != reference.shape:
            raise ValueError(
                f"{path}: label map shape {vol.shape} differs from {ref_name} {reference.shape}"
            )
        diff = vol.grid().affine_distance(reference.grid())
        if diff > atol_mm:
            raise ValueError(
                f"{path}: label map affine differs from {ref_name} by {diff:.3g} mm "
                f"(tolerance {atol_mm} mm)"
            )
    return vol
