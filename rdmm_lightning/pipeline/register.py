"""``rdmm register`` as a function: files in, architecture.md's output folder out.

:func:`register_files` = :func:`~.config.resolve_register_config` ->
:func:`~.pair.prepare_pair` -> :func:`register_pair`
(:func:`rdmm_lightning.optimize.register_tensors`) ->
:func:`~.outputs.write_registration_outputs`. Nothing is written before the registration has
finished, so a bad input or option leaves no output folder behind.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..io import Volume, read_label_map
from ..registration import RegistrationResult
from ..runtime import choose_num_threads, num_threads, resolve_device
from .atomic import check_output_dir
from .config import resolve_register_config
from .outputs import write_registration_outputs
from .pair import PreparedPair, prepare_pair
from .physical import grid_world, sample_volume

__all__ = [
    "optimizer_arguments",
    "region_pre_weights",
    "register_files",
    "register_pair",
]

log = logging.getLogger(__name__)


def region_pre_weights(
    pair: PreparedPair,
    region_mask: str | os.PathLike | Volume,
    inside: Sequence[float],
    outside: Sequence[float],
) -> Tensor:
    """Per-region RDMM pre-weights ``(1, N, *S_w)`` from a mask in the source's space.

    Voxels of the mask with a non-zero label get ``h^2 = inside``, the rest ``h^2 = outside``
    (each normalised to sum 1). The mask may lie on any grid of the source's physical space; it
    is resampled into the working grid (nearest neighbour) like the source image.
    """
    h2 = torch.tensor([list(map(float, inside)), list(map(float, outside))], dtype=torch.float64)
    if h2.shape[1] == 0 or bool((h2 < 0).any()) or bool((h2.sum(1) <= 0).any()):
        raise ValueError(
            f"region h^2 must be non-negative with a positive sum; got inside {list(inside)}, "
            f"outside {list(outside)}"
        )
    vol = region_mask if isinstance(region_mask, Volume) else read_label_map(region_mask)
    name = vol.path or "region mask"
    if vol.dim != pair.dim:
        raise ValueError(f"{name}: {vol.dim}D mask, but the images are {pair.dim}D")
    world = grid_world(pair.working_shape, pair.working_affine)
    inner = sample_volume(vol, world, labels=True) != 0  # (1, 1, *S_w)
    if not bool(inner.any()):
        raise ValueError(f"{name}: no mask voxel lies inside the target's field of view")
    h2 = h2 / h2.sum(dim=1, keepdim=True)
    view = (1, -1) + (1,) * pair.dim
    h = torch.where(inner, h2[0].view(view), h2[1].view(view)).sqrt()
    return h.to(torch.float32)


def optimizer_arguments(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(affine_kwargs, deformable_kwargs)`` of :func:`rdmm_lightning.optimize.register_tensors`
    from a resolved config (without ``pre_weights``, ``progress`` and ``max_time``)."""
    from ..optimize import LbfgsOptions
    from ..shooting import SolverOptions

    aff = dict(cfg["affine_options"])
    aff["similarity"] = aff["similarity"] or cfg["similarity"]
    if not aff["similarity_kwargs"] and aff["similarity"] == cfg["similarity"]:
        aff["similarity_kwargs"] = dict(cfg["similarity_kwargs"])
    aff["similarity_kwargs"] = aff["similarity_kwargs"] or None
    aff["lbfgs"] = LbfgsOptions(**aff["lbfgs"])
    if cfg["model"] == "affine":
        return aff, {}
    skip = set(_PIPELINE_KEYS)
    deformable = {k: v for k, v in cfg.items() if k not in skip}
    deformable["similarity"] = cfg["similarity"]
    deformable["similarity_kwargs"] = dict(cfg["similarity_kwargs"]) or None
    deformable["regularizer"] = cfg["regularizer"]
    deformable["solver"] = SolverOptions(**cfg["solver"])
    deformable["lbfgs"] = LbfgsOptions(**cfg["lbfgs"])
    return aff, deformable


_PIPELINE_KEYS = (
    "model",
    "similarity",
    "similarity_kwargs",
    "regularizer",
    "region_mask",
    "region",
    "max_time",
    "device",
    "threads",
    "spacing_mode",
    "normalize",
    "working_shape",
    "affine",
    "affine_options",
)


def register_pair(
    pair: PreparedPair,
    cfg: Mapping[str, Any],
    *,
    progress: bool = False,
    pre_weights: Tensor | None = None,
) -> RegistrationResult:
    """Run :func:`rdmm_lightning.optimize.register_tensors` on a prepared pair with a resolved
    config (see :mod:`.config`); returns the working-grid result.

    It runs with :func:`~rdmm_lightning.runtime.choose_num_threads` threads for the working grid
    (the caller's count is restored afterwards); ``result.extras["runtime"]`` records the thread
    count torch reported during the run and the device of the result."""
    from ..optimize import register_tensors

    device = resolve_device(cfg["device"])
    pair = pair.to(device)
    aff_kwargs, deformable = optimizer_arguments(cfg)
    if cfg["model"] == "affine":
        aff_kwargs.update(max_time=cfg["max_time"], progress=progress)
    else:
        deformable.update(max_time=cfg["max_time"], progress=progress)
        if pre_weights is None and cfg["region_mask"]:
            region = cfg["region"]
            pre_weights = region_pre_weights(
                pair, cfg["region_mask"], region["inside"], region["outside"]
            )
        if pre_weights is not None:
            deformable["pre_weights"] = pre_weights.to(device)
            deformable.pop("initial_h2", None)
    threads = choose_num_threads(cfg["threads"], math.prod(pair.working_shape))
    with num_threads(threads):
        result = register_tensors(
            pair.source,
            pair.target,
            cfg["model"],
            spacing=pair.spacing,
            affine=bool(cfg["affine"]),
            affine_kwargs=aff_kwargs,
            **deformable,
        )
        used = torch.get_num_threads()
    result.extras["runtime"] = {"threads": used, "device": str(result.phi_inv.device)}
    return result


def register_files(
    source: str | os.PathLike,
    target: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    source_label: str | os.PathLike | None = None,
    target_label: str | os.PathLike | None = None,
    similarity: str | None = None,
    regularizer: str | None = None,
    region_mask: str | os.PathLike | None = None,
    max_time: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Register ``source`` to ``target`` (image files) and write ``out_dir``; returns the metrics.

    Options are resolved as defaults < ``config`` (YAML file or mapping) < the keyword
    arguments given here (None: not given; defaults ``model="rdmm"``, ``similarity="lncc"``,
    ``regularizer="optimized"``, ``device="auto"``, ``threads`` automatic) < ``overrides``
    (``"key=value"`` strings).
    ``region_mask`` (a mask in the source's space) gives the per-region pre-weights of
    ``regularizer="predefined"`` (paper lung setting by default, keys ``region.inside`` and
    ``region.outside``).

    Raises:
        ValueError: one line naming the file or option at fault; nothing is written then.
    """
    check_output_dir(out_dir)
    explicit = {
        "model": model,
        "similarity": similarity,
        "regularizer": regularizer,
        "region_mask": None if region_mask is None else os.fspath(region_mask),
        "max_time": max_time,
        "device": device,
        "threads": threads,
    }
    cfg = resolve_register_config(config, overrides, explicit)
    pair, result = prepare_and_register(
        source, target, cfg, source_label, target_label, cfg["region_mask"], progress
    )
    return write_registration_outputs(out_dir, pair, result, config=cfg)


def prepare_and_register(
    source: Any,
    target: Any,
    cfg: Mapping[str, Any],
    source_label: Any = None,
    target_label: Any = None,
    region_mask: Any = None,
    progress: bool = False,
) -> tuple[PreparedPair, RegistrationResult]:
    """Check the device, bring the pair (files or Volumes) to its working grid, build the
    predefined-region pre-weights from ``region_mask`` (if any) and register with the resolved
    options ``cfg``."""
    resolve_device(cfg["device"])
    pair = prepare_pair(
        source,
        target,
        source_label=source_label,
        target_label=target_label,
        working_shape=cfg["working_shape"],
        working_spacing_mode=cfg["spacing_mode"],
        normalize=cfg["normalize"],
    )
    pre_weights = None
    if region_mask is not None and region_mask != "":
        region = cfg["region"]
        pre_weights = region_pre_weights(pair, region_mask, region["inside"], region["outside"])
    return pair, register_pair(pair, cfg, progress=progress, pre_weights=pre_weights)
