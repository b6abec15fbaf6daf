"""Turning a working-grid :class:`~rdmm_lightning.result.RegistrationResult` into the files
of docs/architecture.md, each on the grid the table names.

With ``T``: target world -> source world (the total pull-back, through the working grid):

* ``warped`` = original source sampled at ``T(p)`` for every target voxel ``p`` (one resampling
  of the original intensities, as ``sitk.Resample`` with ``displacement.nii.gz`` does);
* ``displacement`` = ``T(p) - p`` on the target grid, ``inverse_displacement`` =
  ``T^{-1}(y) - y`` on the source grid (RAS in memory, LPS on disk);
* ``jacobian`` = ``det DT`` on the target grid (world to world, so independent of the voxel
  sizes; equal to det J of ``phi^{-1}`` in domain units on the working grid);
* ``sigma_t0`` (source grid) and ``sigma_t1`` (target grid) in domain units of the working grid;
* ``affine.mat``: ``T_aff``, the affine part of ``T`` (the registration's affine matrix taken from
  the working grid's domain coordinates to world mm; identity without an affine stage), as an ITK
  transform file; ``composite.h5``: ``T`` as one ITK composite transform, ``T_aff`` after the
  residual displacement ``T_aff^{-1}(T(p)) - p`` on the target grid, so that
  ``sitk.Resample(source, target, sitk.ReadTransform("composite.h5"))`` gives ``warped``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._version import __version__
from ..io import Volume, write_displacement, write_volume
from ..io.itk_fields import (
    sitk_composite_transform,
    write_affine_transform,
    write_composite_transform,
)
from ..io.volume import itk_from_affine
from ..metrics.dice import dice_per_label
from ..metrics.jacobian import fold_statistics, jacobian_determinant
from ..ops.grid import check_map, identity_map
from ..ops.warp import sample_field
from ..result import RegistrationResult
from ..runtime import num_threads
from .atomic import check_output_dir, staged_dir
from .pair import PreparedPair
from .physical import sample_volume, sample_working_field

__all__ = [
    "OUTPUT_FILES",
    "RegistrationOutputs",
    "compute_registration_outputs",
    "dice_summary",
    "invert_map",
    "save_registration_outputs",
    "world_affine",
    "write_outputs_to",
    "write_registration_outputs",
]

OUTPUT_FILES = (
    "warped.nii.gz",
    "warped_label.nii.gz",
    "displacement.nii.gz",
    "inverse_displacement.nii.gz",
    "affine.mat",
    "composite.h5",
    "jacobian.nii.gz",
    "sigma_t0.nii.gz",
    "sigma_t1.nii.gz",
    "metrics.json",
    "overview.png",
)
"""Every file a registration may write into its output folder."""

log = logging.getLogger(__name__)


@dataclass
class RegistrationOutputs:
    """Everything written by :func:`write_registration_outputs`, in memory.

    ``warped``, ``warped_label``, ``jacobian``, ``sigma_t1`` and ``displacement`` lie on the
    target grid, ``inverse_displacement`` and ``sigma_t0`` on the source grid. Displacements are
    ``(D, *S)`` in RAS mm (:func:`rdmm_lightning.io.write_displacement` writes them as LPS).
    ``affine_matrix`` ``(D + 1, D + 1)`` is the affine part of the pull-back (target world ->
    source world, RAS mm) and ``residual_displacement`` (target grid, RAS mm) what remains after
    it (see the module docstring); both None when the affine part is singular.
    """

    warped: Volume
    displacement: Volume
    inverse_displacement: Volume
    jacobian: Volume
    metrics: dict[str, Any]
    warped_label: Volume | None = None
    sigma_t0: Volume | None = None
    sigma_t1: Volume | None = None
    affine_matrix: np.ndarray | None = None
    residual_displacement: Volume | None = None

    def to_sitk(self):
        """The whole pull-back as a ``sitk.CompositeTransform`` (LPS mm): what ``composite.h5``
        holds; ``sitk.Resample(source, target, transform)`` reproduces ``warped``."""
        if self.affine_matrix is None or self.residual_displacement is None:
            raise ValueError("no transform: the registration's affine part is singular")
        res = self.residual_displacement
        return sitk_composite_transform(self.affine_matrix, res.data, res.affine)


def invert_map(
    phi_inv: Tensor, spacing: tuple[float, ...], iterations: int = 50, tol: float = 1e-7
) -> Tensor:
    """Forward map ``phi`` of a pull-back map ``phi_inv: (B, D, *S)`` on the same grid, by the
    fixed-point iteration ``x <- y - u(x)`` with ``u = phi_inv - id`` (border padding); converges
    for smooth maps whose displacement gradient is below 1. Returns ``(B, D, *S)``."""
    ident = identity_map(phi_inv.shape[2:], spacing, dtype=phi_inv.dtype, device=phi_inv.device)
    u = phi_inv - ident
    x = ident - u
    for _ in range(iterations):
        new = ident - sample_field(u, x, spacing, padding_mode="border")
        step = float((new - x).abs().max())
        x = new
        if step < tol:
            break
    return x


def _check_result(pair: PreparedPair, result: RegistrationResult) -> None:
    check_map(result.phi_inv, "result.phi_inv", pair.working_shape)
    if result.phi_inv.shape[0] != 1:
        raise ValueError(f"expected one pair (batch 1); got phi_inv {tuple(result.phi_inv.shape)}")
    if result.phi is not None:
        check_map(result.phi, "result.phi", pair.working_shape)
    h = pair.domain_spacing
    if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(result.spacing, h)):
        raise ValueError(
            f"result.spacing {tuple(result.spacing)} differs from the pair's working domain "
            f"spacing {h}"
        )


def _pullback_world(pair: PreparedPair, phi_inv: Tensor, world: Tensor) -> Tensor:
    """``T(p)``: source world positions ``(1, D, *S_t)`` of the target voxels' world positions
    ``p`` ``(1, D, *S_t)``."""
    tgt = pair.target_volume
    if tgt.grid().same_as(pair.grid):
        y = phi_inv.to(torch.float64)  # the target voxels are the working grid's own voxels
    else:
        y = sample_working_field(phi_inv, world, pair.grid, is_map=True)
    return pair.grid.domain_to_world(y.to(torch.float64))


def _forward_world(pair: PreparedPair, phi: Tensor, world: Tensor) -> Tensor:
    """``T^{-1}(y)``: target world positions of source world points ``y`` ``(1, D, *S)``."""
    x = sample_working_field(phi, world, pair.grid, is_map=True)
    return pair.grid.domain_to_world(x.to(torch.float64))


def world_affine(matrix: Tensor | None, pair: PreparedPair) -> np.ndarray:
    """The affine part ``T_aff`` of a pull-back in world coordinates: ``(D + 1, D + 1)``
    homogeneous, RAS mm, target world -> source world. ``matrix`` ``(D, D + 1)`` (or ``(1, D,
    D + 1)``) acts on the domain coordinates of ``pair``'s working grid
    (:attr:`RegistrationResult.affine`); None gives the identity."""
    dim = len(pair.working_shape)
    if matrix is None:
        return np.eye(dim + 1)
    m = matrix.detach().reshape(dim, dim + 1).cpu().double().numpy()
    points = np.vstack([np.zeros(dim), np.eye(dim)])  # world points 0, e_1, ..., e_D
    x = pair.grid.world_to_domain(points)
    q = pair.grid.domain_to_world(x @ m[:, :dim].T + m[:, dim])
    out = np.eye(dim + 1)
    out[:dim, :dim] = (q[1:] - q[0]).T
    out[:dim, dim] = q[0]
    return out


def _residual(matrix: np.ndarray, q: Tensor, p: Tensor) -> Tensor | None:
    """``M^{-1} q - p`` for world points ``(1, D, *S)`` (float64), or None when ``M`` is not
    finite and invertible."""
    dim = matrix.shape[0] - 1
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:dim, :dim])) < 1e-12:
        return None
    inv = torch.as_tensor(np.linalg.inv(matrix), dtype=torch.float64, device=q.device)
    back = torch.einsum("ij,bj...->bi...", inv[:dim, :dim], q.to(torch.float64))
    return back + inv[:dim, dim].view(1, dim, *([1] * dim)) - p


def _volume(data: Tensor, ref: Volume, file_dtype: str | None = None) -> Volume:
    return Volume(data.detach().cpu(), ref.affine, None, file_dtype)


def dice_summary(warped: Tensor, target: Tensor) -> list[dict[str, Any]]:
    """Dice of label maps ``(B, 1, *S)``, one dict per item: ``{"per_label": {label: dice},
    "mean": mean over the labels (None without labels)}``."""
    per = dice_per_label(warped, target)
    items = []
    for b in range(warped.shape[0]):
        values = {str(k): float(v[b]) for k, v in sorted(per.items())}
        mean = float(np.mean(list(values.values()))) if values else None
        items.append({"per_label": values, "mean": mean})
    return items


def _dice(warped: Tensor | None, target: Tensor | None) -> dict[str, Any] | None:
    return None if warped is None or target is None else dice_summary(warped, target)[0]


def _jsonable(value: Any) -> Any:
    """Plain JSON types: tuples -> lists, paths -> str, tensors/arrays -> lists, NaN -> None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray, np.generic)):
        return _jsonable(np.asarray(value.cpu() if isinstance(value, Tensor) else value).tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _grid_info(vol: Volume) -> dict[str, Any]:
    return {"path": vol.path, "shape": list(vol.shape), "spacing_mm": list(vol.voxel_size_mm)}


def _metrics(
    pair: PreparedPair,
    result: RegistrationResult,
    det: Tensor,
    warped_label: Tensor | None,
    initial_label: Tensor | None,
    config: dict[str, Any] | None,
) -> dict[str, Any]:
    folds = fold_statistics(det)
    tgt_lab = None if pair.target_label_volume is None else pair.target_label_volume.batch()
    if tgt_lab is not None and warped_label is not None:
        tgt_lab = tgt_lab.to(warped_label.device)
    metrics: dict[str, Any] = {
        "model": result.model,
        "time_s": float(result.time_s),
        "stopped": result.stopped,
        "negative_jacobian_voxels": int(folds["negative_jacobian_voxels"][0]),
        "negative_jacobian_fraction": float(folds["negative_jacobian_fraction"][0]),
        "folds": float(folds["folds"][0]),
        "jacobian_min": float(det.min()),
        "jacobian_max": float(det.max()),
    }
    dice = _dice(warped_label, tgt_lab)
    if dice is not None:
        metrics["dice"] = dice
        metrics["dice_initial"] = _dice(initial_label, tgt_lab)
    metrics["iterations"] = len(result.history)
    metrics["source"] = _grid_info(pair.source_volume)
    metrics["target"] = _grid_info(pair.target_volume)
    labels = {"source_label": pair.source_label_volume, "target_label": pair.target_label_volume}
    for side, vol in labels.items():
        if vol is not None:
            metrics[side] = vol.path
    metrics["working_grid"] = {
        "shape": list(pair.working_shape),
        "spacing_mode": pair.spacing_mode,
        "domain_spacing": list(pair.domain_spacing),
        "source_overlap": pair.overlap,
    }
    if "runtime" in result.extras:  # threads and device the registration ran with
        metrics["runtime"] = dict(result.extras["runtime"])
    metrics["config"] = config or {}
    metrics["version"] = __version__
    return _jsonable(metrics)


def compute_registration_outputs(
    pair: PreparedPair, result: RegistrationResult, *, config: dict[str, Any] | None = None
) -> RegistrationOutputs:
    """All output volumes and the metrics of one registration, on the source's and target's own
    grids (see the module docstring). ``result`` must be on ``pair``'s working grid, batch 1.
    Computed with the thread count the registration ran with (``result.extras["runtime"]``),
    when recorded."""
    threads = (result.extras.get("runtime") or {}).get("threads")
    if threads is None:
        return _compute_outputs(pair, result, config)
    with num_threads(threads):
        return _compute_outputs(pair, result, config)


def _compute_outputs(
    pair: PreparedPair, result: RegistrationResult, config: dict[str, Any] | None
) -> RegistrationOutputs:
    _check_result(pair, result)
    src, tgt = pair.source_volume, pair.target_volume
    device = result.phi_inv.device
    with torch.no_grad():
        p = tgt.grid().world_points(device)
        q = _pullback_world(pair, result.phi_inv, p)  # (1, D, *S_t) source world
        warped = sample_volume(src, q)
        warped_label = initial_label = None
        if pair.source_label_volume is not None:
            warped_label = sample_volume(pair.source_label_volume, q, labels=True)
            initial_label = sample_volume(pair.source_label_volume, p, labels=True)
        tgt_grid = tgt.grid()
        det = jacobian_determinant(tgt_grid.world_to_domain(q), tgt_grid.domain_spacing)
        matrix = world_affine(result.affine, pair)
        residual = _residual(matrix, q, p)

        phi = result.phi
        if phi is None:
            phi = invert_map(result.phi_inv.to(torch.float64), pair.domain_spacing)
        y = src.grid().world_points(device)
        r = _forward_world(pair, phi, y)

        sigma_t0 = sigma_t1 = None
        if result.sigma_t0 is not None:
            s0 = sample_working_field(result.sigma_t0[:1], y, pair.grid)
            sigma_t0 = _volume(s0[0].float(), src)
        if result.sigma_t1 is not None:
            s1 = sample_working_field(result.sigma_t1[:1], p, pair.grid)
            sigma_t1 = _volume(s1[0].float(), tgt)

    label_dtype = None
    if pair.source_label_volume is not None:
        stored = pair.source_label_volume.file_dtype
        label_dtype = stored if stored and np.dtype(stored).kind in "iu" else None
    metrics = _metrics(pair, result, det, warped_label, initial_label, config)
    if residual is None:
        log.warning("the affine part is singular: no affine.mat or composite.h5")
    return RegistrationOutputs(
        warped=_volume(warped[0].float(), tgt, "float32"),
        warped_label=None if warped_label is None else _volume(warped_label[0], tgt, label_dtype),
        displacement=_volume((q - p)[0], tgt, "float32"),
        inverse_displacement=_volume((r - y)[0], src, "float32"),
        jacobian=_volume(det.float(), tgt, "float32"),
        sigma_t0=sigma_t0,
        sigma_t1=sigma_t1,
        metrics=metrics,
        affine_matrix=None if residual is None else matrix,
        residual_displacement=None if residual is None else _volume(residual[0].float(), tgt),
    )


def _overview(pair: PreparedPair, result: RegistrationResult, outputs: RegistrationOutputs):
    """``overview.png`` from the files' contents: the source on its grid, the rest on the
    target's, in the radiological layout of their affines; the deformation grid shows the
    pull-back in target voxel indices (``i + A^{-1} u`` with the displacement ``u``)."""
    from ..grid import index_grid
    from ..viz import registration_figure

    metrics = outputs.metrics
    title = f"{result.model}: det J <= 0 at {metrics['negative_jacobian_voxels']} voxels"
    if "dice" in metrics and metrics["dice"]["mean"] is not None:
        title += f", mean Dice {metrics['dice']['mean']:.3f}"
    src, tgt, disp = pair.source_volume, pair.target_volume, outputs.displacement
    dim = tgt.dim
    to_index = torch.as_tensor(np.linalg.inv(tgt.affine[:dim, :dim]), dtype=torch.float32)
    u = disp.data.to(torch.float32)
    index_map = index_grid(tgt.shape, dtype=torch.float32)[0] + torch.einsum(
        "ij,j...->i...", to_index, u
    )
    labels = {"target": pair.target_label_volume, "warped": outputs.warped_label}
    labels = {k: v.data for k, v in labels.items() if v is not None and v.shape == tgt.shape}
    return registration_figure(
        src.data,
        tgt.data,
        outputs.warped.data,
        index_map,
        (1.0,) * dim,
        affine=tgt.affine,
        source_affine=src.affine,
        target_label=labels.get("target"),
        warped_label=labels.get("warped"),
        det=outputs.jacobian.data[0],
        sigma=None if outputs.sigma_t1 is None else outputs.sigma_t1.data,
        sigma_range=_sigma_range(metrics),
        title=title,
    )


def _sigma_range(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """The model's smallest and largest Gaussian std, from the resolved config if it has them."""
    sigmas = (metrics.get("config") or {}).get("sigmas")
    return (min(sigmas), max(sigmas)) if sigmas else None


def write_outputs_to(folder: Path, outputs: RegistrationOutputs, figure=None) -> None:
    """Write :class:`RegistrationOutputs` (and an optional matplotlib figure) into ``folder``."""
    from ..viz import save_figure

    write_volume(folder / "warped.nii.gz", outputs.warped.data, outputs.warped.affine, "float32")
    if outputs.warped_label is not None:
        lab = outputs.warped_label
        write_volume(folder / "warped_label.nii.gz", lab.data, lab.affine, lab.file_dtype)
    disp, inv = outputs.displacement, outputs.inverse_displacement
    write_displacement(folder / "displacement.nii.gz", disp.data, disp.affine)
    write_displacement(folder / "inverse_displacement.nii.gz", inv.data, inv.affine)
    jac = outputs.jacobian
    write_volume(folder / "jacobian.nii.gz", jac.data, jac.affine, "float32")
    _write_transforms(folder, outputs)
    for name, vol in (("sigma_t0", outputs.sigma_t0), ("sigma_t1", outputs.sigma_t1)):
        if vol is not None:
            write_volume(folder / f"{name}.nii.gz", vol.data, vol.affine, "float32")
    text = json.dumps(outputs.metrics, indent=2, allow_nan=False)
    (folder / "metrics.json").write_text(text + "\n")
    if figure is not None:
        save_figure(figure, folder / "overview.png")


def _write_transforms(folder: Path, outputs: RegistrationOutputs) -> None:
    """``affine.mat`` and ``composite.h5`` (the latter only on grids ITK can store: no shear)."""
    matrix, res = outputs.affine_matrix, outputs.residual_displacement
    if matrix is None or res is None:
        return
    write_affine_transform(folder / "affine.mat", matrix)
    try:
        itk_from_affine(res.affine, res.dim)
    except ValueError as exc:
        log.warning("no composite.h5: the target grid %s", exc)
        return
    write_composite_transform(folder / "composite.h5", matrix, res.data, res.affine)


def save_registration_outputs(
    out_dir: str | os.PathLike,
    pair: PreparedPair,
    result: RegistrationResult,
    outputs: RegistrationOutputs,
) -> dict[str, Any]:
    """Write already computed :class:`RegistrationOutputs` (see
    :func:`write_registration_outputs`, which computes them first); returns the metrics."""
    with staged_dir(out_dir, remove=OUTPUT_FILES) as tmp:
        figure = _overview(pair, result, outputs)
        write_outputs_to(tmp, outputs, figure)
    return outputs.metrics


def write_registration_outputs(
    out_dir: str | os.PathLike,
    pair: PreparedPair,
    result: RegistrationResult,
    *,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the output files (docs/architecture.md) of one registration into ``out_dir``;
    returns the metrics.

    ``result`` lies on ``pair``'s working grid (batch 1); ``config`` (JSON-able) is recorded in
    ``metrics.json``. Everything is written into a hidden sibling folder first and moved into
    place at the end: on error ``out_dir`` is not created (or, if it exists, left as it was).
    Outputs of an earlier run that this one does not produce (e.g. ``sigma_t0.nii.gz`` after a
    non-RDMM model) are removed; other files in ``out_dir`` are kept.
    """
    check_output_dir(out_dir)
    outputs = compute_registration_outputs(pair, result, config=config)
    return save_registration_outputs(out_dir, pair, result, outputs)
