"""The notebook API: :func:`register`, :func:`infer` and :func:`warp` (also
``rdmm_lightning.register``, ``rdmm_lightning.infer`` and ``rdmm_lightning.warp``).

Each function reads its arguments and calls the pipeline (:mod:`rdmm_lightning.pipeline.run`,
the orchestrator that ``rdmm register``, ``rdmm infer`` and ``rdmm evaluate`` use too).

>>> import rdmm_lightning as rl
>>> res = rl.register("moving.nii.gz", "fixed.nii.gz", model="svf", iterations=20)  # doctest: +SKIP
>>> res.extras["metrics"]["negative_jacobian_voxels"], res.phi_inv.shape  # doctest: +SKIP
>>> net = rl.infer("moving.nii.gz", "fixed.nii.gz", "best.ckpt", out="out_dir")  # doctest: +SKIP
>>> rl.warp("out_dir", "other_modality.nii.gz", out="other_warped.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from .io import Volume
from .result import RegistrationResult

__all__ = ["infer", "register", "warp"]

ImageLike = str | os.PathLike | Volume | Tensor


def register(
    source: ImageLike,
    target: ImageLike,
    model: str | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    source_label: ImageLike | None = None,
    target_label: ImageLike | None = None,
    region_mask: str | os.PathLike | Volume | None = None,
    preset: str | None = None,
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
        out_dir: write the output files there (docs/architecture.md; all or nothing), or nothing.
        source_label, target_label: label maps (files, Volumes or integer tensors) for Dice.
        region_mask: RDMM region mask in the source's space (predefined regularizer).
        preset: named settings (``"brain"``, ``"lung"``, ``"knee"``, ``"synthetic"``; the YAML
            files of :mod:`rdmm_lightning.presets`), as ``rdmm register --preset``.
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
            defaults < ``preset`` < ``config`` < these < ``overrides``.

    Returns:
        The :class:`RegistrationResult` on the working grid (the target's grid; images
        normalised to [0, 1]) with ``extras["metrics"]`` (the metrics.json dict),
        ``extras["config"]`` (resolved options), and for batch-1 inputs ``extras["outputs"]``
        (:class:`~rdmm_lightning.pipeline.outputs.RegistrationOutputs`: warped image with the
        original intensities, displacement fields, det J, ... on the source's and target's own
        grids) and ``extras["pair"]`` (the :class:`~rdmm_lightning.pipeline.pair.PreparedPair`).
    """
    from .pipeline.config import resolve_register_config
    from .pipeline.run import register as run_register
    from .pipeline.run import register_batch
    from .pipeline.tensors import as_batch, tensor_volume, voxel_affine

    explicit = dict(options, preset=preset, model=model, threads=threads, device=device)
    if isinstance(region_mask, Volume):
        explicit["region_mask"] = region_mask.path or "<volume>"
    elif region_mask is not None:
        explicit["region_mask"] = os.fspath(region_mask)
    cfg = resolve_register_config(config, overrides, explicit)
    labels = {"source_label": source_label, "target_label": target_label}
    if isinstance(source, Tensor) and as_batch(source, "source").shape[0] > 1:
        if out_dir is not None:
            raise ValueError("out_dir needs one pair; got a batch of tensors")
        return register_batch(
            source, target, cfg, voxel_size=voxel_size, progress=progress, **labels
        )
    dim = as_batch(source, "source").dim() - 2 if isinstance(source, Tensor) else 3
    affine = voxel_affine(voxel_size, dim) if isinstance(source, Tensor) else None
    return run_register(
        tensor_volume(source, "source", affine),
        tensor_volume(target, "target", affine),
        cfg,
        out_dir=out_dir,
        region_mask=region_mask,
        progress=progress,
        **{k: tensor_volume(v, k, affine, labels=True) for k, v in labels.items()},
    )


def infer(
    source: str | os.PathLike | Volume,
    target: str | os.PathLike | Volume,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    source_label: str | os.PathLike | Volume | None = None,
    target_label: str | os.PathLike | Volume | None = None,
    num_steps: int | None = None,
    refine_steps: int = 0,
    device: str | None = None,
    threads: int | None = None,
    affine: str | None = None,
    network_precision: str | None = None,
    compile_shooting: bool = False,
) -> RegistrationResult:
    """Register ``source`` to ``target`` with a trained network checkpoint (``rdmm infer`` in
    Python).

    Both images go through the preprocessing recorded in the checkpoint (as the data module
    prepared the training volumes: e.g. reoriented to RAS+, resized, intensities rescaled
    between percentiles); the source is resampled into the target's physical space on that
    grid, and the network predicts the maps.

    Args:
        source, target: image files or :class:`~rdmm_lightning.io.Volume` s of any shape,
            spacing and orientation.
        checkpoint: the ``.ckpt`` file of an affine/svf/lddmm/rdmm network.
        out: write the output files there (docs/architecture.md; all or nothing), or nothing.
        source_label, target_label: label maps (files or Volumes) for Dice.
        num_steps: network passes K (None: as trained).
        refine_steps: instance-optimisation steps N after the network (not for affine).
        device: ``"auto"``/None (CUDA when available, else CPU), ``"cpu"``, ``"cuda[:N]"``.
        threads: intra-op threads of the network step (None: ``RDMM_NUM_THREADS``, else
            chosen for the grid); the previous count is restored on return.
        affine: the affine stage before a deformable network: ``"net"`` (the checkpoint's
            affine net; the default when it has one), ``"opt"`` (affine-opt on the pair, as
            ``rl.register``'s affine stage, then the network from its map) or ``"none"``.
        network_precision: ``"auto"``/None (as trained, but float32 instead of bfloat16 on a
            device without native bfloat16, where it is 10-20x slower), ``"float32"`` or
            ``"bfloat16"``.
        compile_shooting: shoot with the right-hand side through ``torch.compile`` (faster
            shooting and instance optimisation after tens of seconds of compiling, which later
            calls on the same grid in the process reuse).

    Returns:
        The :class:`RegistrationResult` on the network's working grid, with
        ``extras["metrics"]`` (the metrics.json dict), ``extras["config"]`` (the options),
        ``extras["outputs"]`` and ``extras["pair"]`` as for :func:`register`.

    Raises:
        ValueError: one line naming the checkpoint, file or option at fault.
    """
    from .pipeline.run import infer_files

    return infer_files(
        checkpoint, source, target, out, source_label=source_label, target_label=target_label,
        num_steps=num_steps, refine_steps=refine_steps, device=device, threads=threads,
        affine=affine, network_precision=network_precision, compile_shooting=compile_shooting,
    )  # fmt: skip


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
    from .pipeline.transform import transform_points, warp_image

    if (moving is None) == (points is None):
        raise ValueError("give exactly one of moving= and points=")
    if points is not None:
        return transform_points(
            transform, points, out, inverse=inverse, coordinates=coordinates, threads=threads
        )
    return warp_image(
        transform, moving, out, labels=labels, inverse=inverse, device=device, threads=threads
    )
