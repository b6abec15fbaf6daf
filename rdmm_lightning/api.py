"""The notebook API: :func:`register` and :func:`warp` (also ``rdmm_lightning.register`` and
``rdmm_lightning.warp``).

>>> import rdmm_lightning as rl
>>> res = rl.register("moving.nii.gz", "fixed.nii.gz", model="svf", iterations=20)  # doctest: +SKIP
>>> res.extras["metrics"]["negative_jacobian_voxels"], res.phi_inv.shape  # doctest: +SKIP
>>> rl.warp("out_dir", "other_modality.nii.gz", out="other_warped.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .io import Volume
from .registration import RegistrationResult

__all__ = ["register", "warp"]

ImageLike = str | os.PathLike | Volume | Tensor


def _tensor_batch(x: Tensor, name: str) -> Tensor:
    """``(*S)``, ``(1, *S)`` or ``(B, 1, *S)`` (2D or 3D) -> ``(B, 1, *S)``.

    Ambiguous 4D shapes ``(a, 1, X, Y)`` are read as a 2D batch, ``(1, X, Y, Z)`` as one 3D
    image with its channel.
    """
    if x.dim() == 2 or (x.dim() == 3 and x.shape[0] != 1):
        out = x.unsqueeze(0).unsqueeze(0)  # (*S)
    elif x.dim() == 3 or (x.dim() == 4 and x.shape[1] != 1 and x.shape[0] == 1):
        out = x.unsqueeze(0)  # (1, *S)
    else:
        out = x
    if out.dim() not in (4, 5) or out.shape[1] != 1:
        raise ValueError(
            f"{name} must be (*S), (1, *S) or (B, 1, *S) with 2 or 3 spatial dims; "
            f"got {tuple(x.shape)}"
        )
    return out


def _voxel_affine(voxel_size: Sequence[float] | None, dim: int) -> np.ndarray:
    size = [1.0] * dim if voxel_size is None else [float(v) for v in voxel_size]
    if len(size) != dim or min(size) <= 0:
        raise ValueError(f"voxel_size must have {dim} positive entries; got {voxel_size}")
    return np.diag(size + [1.0] * (4 - dim))


def _as_volume(
    x: ImageLike | None, name: str, affine: np.ndarray | None, labels: bool = False
) -> str | os.PathLike | Volume | None:
    """Paths and Volumes unchanged; a batch-1 tensor becomes a Volume with ``affine``."""
    if x is None or not isinstance(x, Tensor):
        return x
    t = _tensor_batch(x, name)[0].detach().cpu()
    if labels:
        if torch.is_floating_point(t) and bool((t != t.round()).any()):
            raise ValueError(f"{name} must hold integer labels")
        return Volume(t.round().long() if torch.is_floating_point(t) else t.long(), affine)
    return Volume(t.float(), affine, None, "float32")


def register(
    source: ImageLike,
    target: ImageLike,
    model: str | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    source_label: ImageLike | None = None,
    target_label: ImageLike | None = None,
    region_mask: str | os.PathLike | Volume | None = None,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    voxel_size: Sequence[float] | None = None,
    progress: bool = False,
    threads: int | None = None,
    device: str | None = None,
    **options: Any,
) -> RegistrationResult:
    """Register ``source`` to ``target`` by numerical optimisation (``rdmm register`` in Python).

    Args:
        source, target: image files, :class:`~rdmm_lightning.io.Volume` s, or tensors
            ``(*S)``/``(1, *S)``/``(1, 1, *S)`` on one grid (voxel size ``voxel_size`` mm,
            default 1) — tensors of a batch ``B > 1`` are registered item by item in one call,
            without ``out_dir``.
        model: ``"rdmm"`` (default), ``"lddmm"``, ``"svf"`` or ``"affine"``.
        out_dir: write architecture.md's files there (all or nothing); None: write nothing.
        source_label, target_label: label maps (files, Volumes or integer tensors) for Dice.
        region_mask: RDMM region mask in the source's space (predefined regularizer).
        config, overrides: YAML file or mapping of options, and ``"key=value"`` strings.
        voxel_size: voxel size (mm) of tensor inputs.
        progress: progress lines on stderr.
        threads: intra-op threads of the registration (None: the config's ``threads``, else
            ``RDMM_NUM_THREADS``, else :func:`rdmm_lightning.runtime.choose_num_threads` for
            the working grid); the previous count is restored on return.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``; None: the config's ``device`` (default ``"auto"``).
        **options: any option of :mod:`rdmm_lightning.pipeline.config` (``similarity="ncc"``,
            ``iterations=20``, ``max_time=60``, ``solver={"num_steps": 5}``, ...); precedence:
            defaults < ``config`` < these < ``overrides``.

    Returns:
        The :class:`RegistrationResult` on the working grid (the target's grid; images
        normalised to [0, 1]) with ``extras["metrics"]`` (the metrics.json dict),
        ``extras["config"]`` (resolved options), and for batch-1 inputs ``extras["outputs"]``
        (:class:`~rdmm_lightning.pipeline.outputs.RegistrationOutputs`: warped image with the
        original intensities, displacement fields, det J, ... on the source's and target's own
        grids) and ``extras["pair"]`` (the :class:`~rdmm_lightning.pipeline.pair.PreparedPair`).
    """
    from .pipeline.config import resolve_register_config

    explicit = dict(options, model=model, threads=threads, device=device)
    if region_mask is not None and not isinstance(region_mask, Volume):
        explicit["region_mask"] = os.fspath(region_mask)
    elif region_mask is not None:
        explicit["region_mask"] = region_mask.path or "<volume>"
    cfg = resolve_register_config(config, overrides, explicit)
    if isinstance(source, Tensor) and _tensor_batch(source, "source").shape[0] > 1:
        if out_dir is not None:
            raise ValueError("out_dir needs one pair; got a batch of tensors")
        return _register_batch(
            source, target, cfg, source_label, target_label, voxel_size, progress
        )
    dim = _tensor_batch(source, "source").dim() - 2 if isinstance(source, Tensor) else 3
    affine = _voxel_affine(voxel_size, dim) if isinstance(source, Tensor) else None
    return _register_pair(
        _as_volume(source, "source", affine),
        _as_volume(target, "target", affine),
        cfg,
        out_dir,
        _as_volume(source_label, "source_label", affine, labels=True),
        _as_volume(target_label, "target_label", affine, labels=True),
        region_mask,
        progress,
    )


def _register_pair(
    source, target, cfg, out_dir, source_label, target_label, region_mask, progress
) -> RegistrationResult:
    from .pipeline.atomic import check_output_dir
    from .pipeline.outputs import compute_registration_outputs, save_registration_outputs
    from .pipeline.register import prepare_and_register

    if out_dir is not None:
        check_output_dir(out_dir)
    pair, result = prepare_and_register(
        source, target, cfg, source_label, target_label, region_mask, progress
    )
    outputs = compute_registration_outputs(pair, result, config=cfg)
    if out_dir is not None:
        save_registration_outputs(out_dir, pair, result, outputs)
    result.extras.update(metrics=outputs.metrics, config=cfg, outputs=outputs, pair=pair)
    return result


def _register_batch(
    source: Tensor,
    target: Tensor,
    cfg: dict[str, Any],
    source_label: Tensor | None,
    target_label: Tensor | None,
    voxel_size: Sequence[float] | None,
    progress: bool,
) -> RegistrationResult:
    """A batch of tensor pairs on one grid: one optimisation, metrics per item (lists)."""
    from .metrics import dice_per_label, fold_statistics, jacobian_determinant
    from .ops.grid import domain_spacing
    from .ops.warp import warp_labels
    from .optimize import register_tensors
    from .pipeline.pair import normalize_intensities
    from .pipeline.register import optimizer_arguments
    from .runtime import choose_num_threads, num_threads, resolve_device

    if cfg["region_mask"] or cfg["working_shape"] is not None:
        raise ValueError("region_mask and working_shape need one pair, not a batch of tensors")
    device = resolve_device(cfg["device"])
    src, tgt = _tensor_batch(source, "source"), _tensor_batch(target, "target")
    if src.shape != tgt.shape:
        raise ValueError(f"source {tuple(src.shape)} and target {tuple(tgt.shape)} differ")
    shape = tuple(src.shape[2:])
    mm = None if voxel_size is None else [float(v) for v in voxel_size]
    spacing = domain_spacing(shape, cfg["spacing_mode"], mm)
    norm = cfg["normalize"]
    src_n = torch.cat([normalize_intensities(s.float(), norm, "source")[0] for s in src])
    tgt_n = torch.cat([normalize_intensities(t.float(), norm, "target")[0] for t in tgt])
    aff_kwargs, deformable = optimizer_arguments(cfg)
    extra = {"max_time": cfg["max_time"], "progress": progress}
    (aff_kwargs if cfg["model"] == "affine" else deformable).update(extra)
    with num_threads(choose_num_threads(cfg["threads"], src_n.numel())):
        result = register_tensors(
            src_n.unsqueeze(1).to(device),
            tgt_n.unsqueeze(1).to(device),
            cfg["model"],
            spacing=spacing,
            affine=bool(cfg["affine"]),
            affine_kwargs=aff_kwargs,
            **deformable,
        )
        used = torch.get_num_threads()
    with torch.no_grad():
        folds = fold_statistics(jacobian_determinant(result.phi_inv, spacing))
    metrics: dict[str, Any] = {k: v.tolist() for k, v in folds.items()}
    metrics.update(model=result.model, time_s=result.time_s, stopped=result.stopped)
    metrics["runtime"] = {"threads": used, "device": str(result.phi_inv.device)}
    if source_label is not None and target_label is not None:
        s_lab = _tensor_batch(source_label, "source_label").to(device).long()
        t_lab = _tensor_batch(target_label, "target_label").to(device).long()
        warped = warp_labels(s_lab, result.phi_inv, spacing)
        per = dice_per_label(warped, t_lab)
        metrics["dice"] = {
            "per_label": {str(k): v.tolist() for k, v in sorted(per.items())},
            "mean": torch.stack(list(per.values())).mean(0).tolist() if per else None,
        }
    result.extras.update(metrics=metrics, config=cfg)
    return result


def warp(
    transform: str | os.PathLike,
    moving: str | os.PathLike | Volume | None = None,
    out: str | os.PathLike | None = None,
    *,
    points: np.ndarray | str | os.PathLike | None = None,
    labels: bool = False,
    inverse: bool = False,
    coordinates: str = "lps",
    threads: int | None = None,
    device: str = "auto",
) -> Volume | np.ndarray | str:
    """Apply a registration folder (``rdmm warp`` in Python).

    * ``moving`` (file or Volume) in the source's space -> a :class:`Volume` on the target grid
      (``inverse=True``: a target-space image -> the source grid); ``labels=True`` for label
      maps; written to ``out`` when given.
    * ``points``: an ``(N, D)`` array of physical points (``coordinates`` ``"lps"`` as ITK, or
      ``"ras"``) -> mapped ``(N, D)`` array, target -> source (``inverse=True``: source ->
      target); or a CSV file (header ``x,y[,z]``) -> written to ``out``, its path returned.

    Images are resampled on ``device`` (``"auto"``: CUDA when available, else CPU; ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``) with ``threads`` intra-op threads (None: ``RDMM_NUM_THREADS`` or
    :func:`rdmm_lightning.runtime.choose_num_threads` for the output grid; the previous count
    is restored on return). Points are mapped on the CPU with ``threads`` threads (None:
    ``RDMM_NUM_THREADS`` or one; ``device`` is not used).
    """
    from .io import read_image, read_label_map, write_volume
    from .pipeline.transform import load_transform, map_points, warp_points_csv, warp_volume
    from .runtime import choose_num_threads, num_threads, requested_threads, resolve_device

    if (moving is None) == (points is None):
        raise ValueError("give exactly one of moving= and points=")
    if points is not None:
        if isinstance(points, (str, os.PathLike)) and out is None:
            raise ValueError("a points CSV needs out=")
        with num_threads(choose_num_threads(threads, 1)):  # light work: one unless asked
            if isinstance(points, (str, os.PathLike)):
                return warp_points_csv(
                    transform, points, out, inverse=inverse, coordinates=coordinates
                )
            pts = np.asarray(points)
            return map_points(transform, pts, inverse=inverse, coordinates=coordinates)
    dev = resolve_device(device)
    requested_threads(threads)  # bad values fail before reading files
    tr = load_transform(transform)
    if not isinstance(moving, Volume):
        moving = read_label_map(moving) if labels else read_image(moving)
    warped = warp_volume(tr, moving, labels=labels, inverse=inverse, device=dev, threads=threads)
    if out is not None:
        from .pipeline.atomic import staged_file

        with staged_file(out) as tmp:
            write_volume(tmp, warped.data, warped.affine, warped.file_dtype)
    return warped
