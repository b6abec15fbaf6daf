"""Writing registration outputs that ITK / SimpleITK / ANTs understand, and reading them back.

Displacement fields follow the ITK convention (what ``sitk.DisplacementFieldTransform``,
``antsApplyTransforms`` and ``itk.ResampleImageFilter`` expect):

* a NIfTI file of shape ``X x Y x Z x 1 x 3`` (2D: ``X x Y x 1 x 1 x 2``), intent code 1007
  (``vector``), on the voxel grid given by its header affine;
* each voxel ``p`` holds ``d(p)`` in **LPS** millimetres such that the transform maps the physical
  point ``p`` to ``p + d(p)`` (ITK: resampling a moving image onto the field's grid reads the
  moving image at ``p + d(p)``).

In memory, fields are ``(D, *S)`` in **RAS** millimetres (world convention of
:class:`~rdmm_lightning.io.volume.Volume`); the writers and readers flip the first two components.

For a registration with pull-back map ``phi_inv`` (target grid -> source domain coordinates),
``displacement.nii.gz = displacement_from_map(phi_inv, target..., source...)`` lies on the
**target** grid and resamples the source into the target; the inverse field (forward map ``phi``
sampled on the source grid, in target domain coordinates) lies on the **source** grid.

Transforms: a world affine map ``(D + 1, D + 1)`` (RAS mm in memory) is written as an ITK
``AffineTransform`` in LPS mm (``.mat``, as ANTs' ``0GenericAffine.mat``), and an affine map with
a displacement field as one ITK ``CompositeTransform`` (``.h5``, as ANTs' ``Composite.h5``); see
:func:`write_affine_transform` and :func:`write_composite_transform`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..grid import (
    domain_to_world,
    index_grid,
    index_to_world,
    inside_itk_buffer,
    world_to_domain,
    world_to_index,
)
from ..ops.warp import sample_field
from .volume import (
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    Volume,
    _check_file,
    _one_line,
    affine_from_itk,
    itk_from_affine,
)

__all__ = [
    "write_volume",
    "write_displacement",
    "read_displacement",
    "displacement_from_map",
    "map_from_displacement",
    "warp_points",
    "sitk_affine_transform",
    "sitk_composite_transform",
    "write_affine_transform",
    "write_composite_transform",
    "AFFINE_TRANSFORM_SUFFIXES",
    "COMPOSITE_TRANSFORM_SUFFIXES",
    "NIFTI_INTENT_VECTOR",
]

NIFTI_INTENT_VECTOR = 1007
AFFINE_TRANSFORM_SUFFIXES = (".mat", ".tfm", ".txt")
"""ITK transform files for an affine map: ``.mat`` (ITK's MATLAB format, as ANTs writes
``0GenericAffine.mat``), ``.tfm``/``.txt`` (ITK text)."""
COMPOSITE_TRANSFORM_SUFFIXES = (".h5", ".hdf5")
"""ITK transform files for a composite transform with a displacement field (HDF5, as ANTs'
``Composite.h5``)."""
_LPS = np.array([-1.0, -1.0, 1.0])


def _to_numpy(data: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(data, Tensor):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def _strip_channels(arr: np.ndarray) -> np.ndarray:
    """``(*S)``, ``(1, *S)`` or ``(1, 1, *S)`` -> ``(*S)`` with 2 or 3 spatial axes."""
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"data must be (*S), (1, *S) or (1, 1, *S) with 2 or 3 spatial dims; got {arr.shape}"
        )
    return arr


def _batched(field: Tensor) -> Tensor:
    """``(D, *S)`` or ``(1, D, *S)`` -> ``(1, D, *S)`` with ``D = len(S)`` in {2, 3}."""
    if field.dim() in (4, 5) and field.shape[0] == 1 and field.shape[1] == field.dim() - 2:
        out = field
    else:
        out = field.unsqueeze(0)
    if out.shape[1] != out.dim() - 2 or out.shape[1] not in (2, 3):
        raise ValueError(
            f"expected (D, *S) or (1, D, *S) with D = len(S) in (2, 3); got {tuple(field.shape)}"
        )
    return out


def _default_dtype(arr: np.ndarray) -> np.dtype:
    if arr.dtype.kind == "f":
        return np.dtype(np.float32)
    if arr.dtype.kind == "b":
        return np.dtype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"unsupported data type {arr.dtype}")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for cand in (np.uint8, np.int16, np.int32):
        info = np.iinfo(cand)
        if info.min <= lo and hi <= info.max:
            return np.dtype(cand)
    return np.dtype(np.int64)


def _is_nifti(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def _is_itk(path: str) -> bool:
    return path.lower().endswith(ITK_SUFFIXES)


def _nifti(arr: np.ndarray, affine: np.ndarray, dtype: np.dtype):
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine, dtype=dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def _prepare_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not (_is_nifti(path) or _is_itk(path)):
        raise ValueError(
            f"{path}: unsupported output type (use .nii.gz, .nii, {', '.join(ITK_SUFFIXES)})"
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def _sitk_image(arr: np.ndarray, affine: np.ndarray, dim: int, vector: bool):
    """SimpleITK image of ``arr`` (``(*S)``, or ``(*S, D)`` with ``vector``) on the grid
    ``affine`` (voxel index -> RAS mm; stored as ITK's LPS origin, spacing and direction)."""
    import SimpleITK as sitk

    order = tuple(range(dim - 1, -1, -1)) + ((dim,) if vector else ())
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, order)), isVector=vector)
    origin, spacing, direction = itk_from_affine(affine, dim)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def _write_itk(path: str, arr: np.ndarray, affine: np.ndarray, dim: int, vector: bool) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(_sitk_image(arr, affine, dim, vector), path, True)


def write_volume(
    path: str | os.PathLike,
    data: Tensor | np.ndarray,
    affine: np.ndarray,
    dtype: np.dtype | str | None = None,
) -> str:
    """Write an image or label map on the grid ``affine`` (voxel index -> RAS mm).

    Args:
        path: ``.nii.gz``/``.nii`` (nibabel; qform and sform both set to ``affine``, code 1,
            units mm) or ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` (SimpleITK; axes must be orthogonal).
        data: ``(*S)``, ``(1, *S)`` or ``(1, 1, *S)``; 2D data give a 2D file.
        affine: ``(4, 4)``.
        dtype: stored dtype; default float32 for float data, the smallest of uint8/int16/int32/int64
            holding integer data.

    Returns:
        The path written.
    """
    path = _prepare_path(path)
    arr = _strip_channels(_to_numpy(data))
    affine = np.asarray(affine, dtype=np.float64)
    dtype = _default_dtype(arr) if dtype is None else np.dtype(dtype)
    arr = arr.astype(dtype)
    if _is_nifti(path):
        import nibabel as nib

        nib.save(_nifti(arr, affine, dtype), path)
    else:
        _write_itk(path, arr, affine, arr.ndim, vector=False)
    return path


def write_displacement(
    path: str | os.PathLike,
    displacement: Tensor | np.ndarray,
    affine: np.ndarray,
    dtype: np.dtype | str = np.float32,
) -> str:
    """Write a displacement field in the ITK convention.

    Args:
        path: ``.nii.gz``/``.nii`` (5D ``X x Y x Z x 1 x 3`` or ``X x Y x 1 x 1 x 2``, intent
            ``vector``) or an ITK format (``.nrrd``, ``.mha``, ...: a vector image).
        displacement: ``(D, *S)`` (or ``(1, D, *S)``) world displacement in **RAS** mm on the grid
            ``affine``; written as **LPS** mm (first two components negated).
        affine: ``(4, 4)`` voxel index -> RAS mm of the field's grid.
        dtype: stored float type.
    """
    path = _prepare_path(path)
    arr = _to_numpy(displacement).astype(np.float64)
    if arr.ndim in (4, 5) and arr.shape[0] == 1 and arr.shape[1] == arr.ndim - 2:
        arr = arr[0]
    dim = arr.shape[0]
    if arr.ndim - 1 != dim or dim not in (2, 3):
        raise ValueError(f"displacement must be (D, *S) with D = len(S) in (2, 3); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: displacement contains NaN/Inf values")
    arr = arr * _LPS[:dim].reshape(dim, *([1] * dim))
    arr = np.moveaxis(arr, 0, -1)  # (*S, D)
    affine = np.asarray(affine, dtype=np.float64)
    dtype = np.dtype(dtype)
    if _is_nifti(path):
        import nibabel as nib

        shape = arr.shape[:dim] + (1,) * (4 - dim) + (dim,)
        img = _nifti(arr.reshape(shape).astype(dtype), affine, dtype)
        img.header.set_intent("vector", (), name="")
        nib.save(img, path)
    else:
        _write_itk(path, arr.astype(dtype), affine, dim, vector=True)
    return path


def _read_field_nifti(path: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(path)
    arr = np.asanyarray(img.dataobj)
    shape = arr.shape
    if arr.ndim != 5 or shape[3] != 1 or shape[4] not in (2, 3):
        raise ValueError(
            f"{path}: not an ITK displacement field (need X x Y x Z x 1 x 3 or X x Y x 1 x 1 x 2;"
            f" got {shape})"
        )
    dim = shape[4]
    if dim == 2:
        if shape[2] != 1:
            raise ValueError(f"{path}: 2-component field needs Z = 1; got shape {shape}")
        arr = arr[:, :, 0, 0, :]
    else:
        arr = arr[:, :, :, 0, :]
    return arr, np.asarray(img.affine, dtype=np.float64)


def _read_field_itk(path: str) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    img = sitk.ReadImage(path)
    dim = img.GetDimension()
    if dim not in (2, 3) or img.GetNumberOfComponentsPerPixel() != dim:
        raise ValueError(
            f"{path}: not a displacement field (dimension {dim}, "
            f"{img.GetNumberOfComponentsPerPixel()} components per voxel)"
        )
    arr = sitk.GetArrayFromImage(img)  # (*size reversed, D)
    arr = np.transpose(arr, tuple(range(dim - 1, -1, -1)) + (dim,))
    affine = affine_from_itk(img.GetOrigin(), img.GetSpacing(), img.GetDirection())
    return arr, affine


def read_displacement(path: str | os.PathLike) -> Volume:
    """Read an ITK-convention displacement field (see :func:`write_displacement`).

    Returns:
        A :class:`Volume` with ``data (D, *S)`` float32 in **RAS** mm and the field's grid affine.
    """
    path = os.fspath(path)
    suffix = _check_file(path)
    try:
        reader = _read_field_nifti if suffix in NIFTI_SUFFIXES else _read_field_itk
        arr, affine = reader(path)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(
            f"{path}: cannot read displacement field, corrupt or unreadable ({_one_line(exc)})"
        ) from exc
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{path}: unsupported voxel type {arr.dtype}")
    dim = arr.shape[-1]
    if min(arr.shape[:-1]) < 2:
        raise ValueError(f"{path}: every spatial axis needs >= 2 voxels; got {arr.shape[:-1]}")
    arr = np.moveaxis(arr.astype(np.float64), -1, 0) * _LPS[:dim].reshape(dim, *([1] * dim))
    data = arr.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: displacement field contains NaN/Inf values")
    return Volume(torch.from_numpy(np.ascontiguousarray(data)), affine, path, "float32")


def displacement_from_map(
    phi_inv: Tensor,
    target_affine: np.ndarray,
    target_spacing_domain: Sequence[float] | None,
    source_affine: np.ndarray,
    source_spacing_domain: Sequence[float],
) -> Tensor:
    """World displacement of a pull-back map, on the target grid.

    Args:
        phi_inv: ``(1, D, *S_t)`` or ``(D, *S_t)``: for each target voxel, the source position in
            the source's domain coordinates (spacing ``source_spacing_domain``).
        target_affine: ``(4, 4)`` of the target grid (voxel index -> RAS mm).
        target_spacing_domain: domain spacing of the target grid. Target voxel positions depend
            only on their indices, so it does not change the result (accepted for symmetry).
        source_affine: ``(4, 4)`` of the source grid.
        source_spacing_domain: domain spacing used by ``phi_inv``'s values.

    Returns:
        ``(D, *S_t)`` ``q - p`` in RAS mm, ``p`` the target voxel's world position and ``q`` the
        world position of ``phi_inv(p)`` in the source; dtype and device of ``phi_inv``. Pass it to
        :func:`write_displacement` with ``target_affine``.

    For the inverse field (on the source grid) call it with the roles swapped: the forward map
    ``phi`` (target domain coordinates, sampled on the source grid), ``source_affine``, ...,
    ``target_affine``, ``target_spacing_domain``.
    """
    del target_spacing_domain  # positions of the target voxels depend only on their indices
    phi = _batched(phi_inv)
    grid = index_grid(phi.shape[2:], dtype=torch.float64, device=phi.device)
    p = index_to_world(grid, target_affine)
    q = domain_to_world(phi.to(torch.float64), source_affine, source_spacing_domain)
    return (q - p)[0].to(phi_inv.dtype)


def map_from_displacement(
    displacement: Tensor,
    field_affine: np.ndarray,
    source_affine: np.ndarray,
    source_spacing_domain: Sequence[float],
) -> Tensor:
    """Inverse of :func:`displacement_from_map`: ``(D, *S)`` RAS mm displacement on the grid
    ``field_affine`` -> pull-back map ``(1, D, *S)`` in the source's domain coordinates
    (ready for :func:`rdmm_lightning.ops.warp.warp_image` with ``source_spacing_domain``)."""
    disp = _batched(displacement)
    grid = index_grid(disp.shape[2:], dtype=torch.float64, device=disp.device)
    q = index_to_world(grid, field_affine) + disp.to(torch.float64)
    return world_to_domain(q, source_affine, source_spacing_domain).to(disp.dtype)


def warp_points(
    points: Tensor | np.ndarray,
    field: Tensor | np.ndarray,
    affine: np.ndarray,
    *,
    outside: str = "itk",
) -> Tensor | np.ndarray:
    """Map world points with a displacement field: ``p -> p + d(p)`` (all RAS mm).

    With ``displacement.nii.gz`` (target grid) this maps target points to source points; with
    ``inverse_displacement.nii.gz`` source points to target points.

    Args:
        points: ``(N, D)`` world RAS mm.
        field: ``(D, *S)`` RAS mm on the grid ``affine`` (e.g. ``read_displacement(f).data``).
        affine: ``(4, 4)`` of the field's grid.
        outside: ``"itk"`` (as ``itk::DisplacementFieldTransform``: (bi/tri)linear interpolation,
            border values up to half a voxel outside the grid, zero displacement beyond) or
            ``"border"`` (border values everywhere).

    Returns:
        ``(N, D)``, same type, dtype and device as ``points``.
    """
    if outside not in ("itk", "border"):
        raise ValueError(f"outside must be 'itk' or 'border'; got {outside!r}")
    is_numpy = isinstance(points, np.ndarray)
    pts = torch.from_numpy(points) if is_numpy else points
    fld = torch.from_numpy(np.asarray(field)) if isinstance(field, np.ndarray) else field
    dim = fld.shape[0]
    if fld.dim() != dim + 1 or pts.dim() != 2 or pts.shape[1] != dim:
        raise ValueError(
            f"points must be (N, D) and field (D, *S) with D = len(S); got {tuple(pts.shape)} "
            f"and {tuple(fld.shape)}"
        )
    p = pts.to(device=fld.device, dtype=torch.float64)
    idx = world_to_index(p, affine)  # (N, D)
    grid_pts = idx.T.reshape(1, dim, -1, *([1] * (dim - 1)))
    disp = sample_field(
        fld.to(torch.float64).unsqueeze(0), grid_pts, (1.0,) * dim, padding_mode="border"
    )
    disp = disp.reshape(dim, -1).T
    if outside == "itk":
        disp = disp * inside_itk_buffer(idx, fld.shape[1:])
    out = p + disp
    if is_numpy:
        return out.cpu().numpy().astype(points.dtype if points.dtype.kind == "f" else np.float64)
    return out.to(device=pts.device, dtype=pts.dtype if torch.is_floating_point(pts) else p.dtype)


def _check_world_affine(matrix: np.ndarray) -> np.ndarray:
    """A finite, invertible ``(D + 1, D + 1)`` homogeneous matrix (D in 2, 3) as float64."""
    m = np.asarray(matrix, dtype=np.float64)
    dim = m.shape[0] - 1
    if m.shape != (dim + 1, dim + 1) or dim not in (2, 3):
        raise ValueError(f"affine matrix must be (D + 1, D + 1) with D in (2, 3); got {m.shape}")
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:dim, :dim])) < 1e-12:
        raise ValueError("affine matrix must be finite and invertible")
    return m


def sitk_affine_transform(matrix: np.ndarray):
    """The ``sitk.AffineTransform`` (LPS mm, centre 0) of a world affine map.

    Args:
        matrix: ``(D + 1, D + 1)`` homogeneous map of **RAS** mm points, ``p -> M p``. For a
            registration: target world -> source world (the affine part of the pull-back), so
            that ``sitk.Resample(source, target, transform)`` applies it, as ITK and ANTs expect.

    Returns:
        ``sitk.AffineTransform`` whose ``TransformPoint`` maps **LPS** points the same way.
    """
    import SimpleITK as sitk

    m = _check_world_affine(matrix)
    dim = m.shape[0] - 1
    flip = np.diag(_LPS[:dim])
    transform = sitk.AffineTransform(dim)
    transform.SetMatrix((flip @ m[:dim, :dim] @ flip).ravel().tolist())
    transform.SetTranslation((flip @ m[:dim, dim]).tolist())
    return transform


def sitk_composite_transform(
    matrix: np.ndarray, displacement: Tensor | np.ndarray, affine: np.ndarray
):
    """An affine map and a displacement field as one ``sitk.CompositeTransform``.

    The transform maps a physical point ``p`` to ``M (p + d(p))``: the field first, then the
    affine map (ITK applies the last transform added first). For a registration, with ``M``
    the affine part of the pull-back (target world -> source world) and ``d`` the residual
    ``M^{-1} T(p) - p`` on the target grid, it is the whole pull-back ``T``: what resamples the
    source into the target (``sitk.Resample(source, target, transform)``); ANTs reads the
    image-side order as "affine, then deformable".

    Args:
        matrix: ``(D + 1, D + 1)`` world affine map of **RAS** mm points.
        displacement: ``(D, *S)`` (or ``(1, D, *S)``) **RAS** mm on the grid ``affine``; zero
            beyond half a voxel outside it, as ITK's displacement-field transform does.
        affine: ``(4, 4)`` voxel index -> RAS mm of the field's grid (orthogonal axes).

    Returns:
        ``sitk.CompositeTransform`` in LPS mm (float64 field).
    """
    import SimpleITK as sitk

    m = _check_world_affine(matrix)
    dim = m.shape[0] - 1
    arr = _to_numpy(displacement).astype(np.float64)
    if arr.ndim == dim + 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape[0] != dim or arr.ndim != dim + 1:
        raise ValueError(f"displacement must be ({dim}, *S) for a {dim}D affine; got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("displacement contains NaN/Inf values")
    arr = np.moveaxis(arr * _LPS[:dim].reshape(dim, *([1] * dim)), 0, -1)  # (*S, D) LPS
    field = sitk.DisplacementFieldTransform(_sitk_image(arr, affine, dim, vector=True))
    return sitk.CompositeTransform([sitk_affine_transform(m), field])


def _transform_path(path: str | os.PathLike, suffixes: tuple[str, ...]) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(suffixes):
        raise ValueError(f"{path}: unsupported transform file type (use {', '.join(suffixes)})")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def write_affine_transform(path: str | os.PathLike, matrix: np.ndarray) -> str:
    """Write a world affine map (``(D + 1, D + 1)``, RAS mm, see :func:`sitk_affine_transform`)
    as an ITK transform file (``.mat``, ``.tfm``, ``.txt``) that ``sitk.ReadTransform`` and ANTs
    read; returns the path."""
    import SimpleITK as sitk

    path = _transform_path(path, AFFINE_TRANSFORM_SUFFIXES)
    sitk.WriteTransform(sitk_affine_transform(matrix), path)
    return path


def write_composite_transform(
    path: str | os.PathLike,
    matrix: np.ndarray,
    displacement: Tensor | np.ndarray,
    affine: np.ndarray,
) -> str:
    """Write :func:`sitk_composite_transform` as one ITK HDF5 transform file (``.h5``), read by
    ``sitk.ReadTransform`` and ANTs (``antsApplyTransforms -t composite.h5``); returns the
    path."""
    import SimpleITK as sitk

    path = _transform_path(path, COMPOSITE_TRANSFORM_SUFFIXES)
    sitk.WriteTransform(sitk_composite_transform(matrix, displacement, affine), path)
    return path
