"""The *register* stage of :mod:`rdmm_lightning.pipeline.run`: numerical optimisation on a
working grid with the resolved options of :mod:`.config`.

* :func:`register_working` — :func:`rdmm_lightning.optimize.register_tensors` on working-grid
  tensors ``(B, 1, *S)``: device, optimiser arguments, thread count, runtime record;
* :func:`register_pair` — the same for a :class:`~.pair.PreparedPair`;
* :func:`region_pre_weights` — the predefined regularizer's pre-weights from a region mask.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..io import Volume, read_label_map
from ..ops.pre_weights import pre_weights_from_region
from ..optimize.progress import Deadline
from ..result import RegistrationResult
from ..runtime import choose_num_threads, num_threads, resolve_device
from .config import optimizer_arguments
from .pair import PreparedPair
from .physical import sample_volume

__all__ = [
    "optimizer_arguments",
    "region_pre_weights",
    "register_pair",
    "register_working",
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
    world = pair.grid.world_points()
    inner = sample_volume(vol, world, labels=True) != 0  # (1, 1, *S_w)
    if not bool(inner.any()):
        raise ValueError(f"{name}: no mask voxel lies inside the target's field of view")
    return pre_weights_from_region(inner.double(), inside, outside).to(torch.float32)


def register_working(
    source: Tensor,
    target: Tensor,
    spacing: Sequence[float],
    cfg: Mapping[str, Any],
    *,
    progress: bool = False,
    pre_weights: Tensor | None = None,
    deadline: Deadline | None = None,
) -> RegistrationResult:
    """Register working-grid images ``(B, 1, *S)`` (normalised) with a resolved config.

    Runs :func:`rdmm_lightning.optimize.register_tensors` on ``cfg["device"]`` with
    :func:`~rdmm_lightning.runtime.choose_num_threads` threads for ``B * prod(S)`` voxels (the
    caller's count is restored afterwards); ``pre_weights`` ``(B, N, *S)`` replace the initial
    RDMM pre-weights; ``deadline`` (default: ``cfg["max_time"]`` from now) is the time the
    optimisation may take. ``result.extras["runtime"]`` records the thread count torch reported
    during the run and the device of the result.

    Raises:
        ValueError: without an affine stage, a deformable stage that ran 0 iterations (e.g. a
            time limit spent before its first): nothing was registered.
    """
    from ..optimize import register_tensors
    from ..optimize.budget import iterations_done

    device = resolve_device(cfg["device"])
    aff_kwargs, deformable = optimizer_arguments(cfg)
    stage = aff_kwargs if cfg["model"] == "affine" else deformable
    stage.update(max_time=cfg["max_time"] if deadline is None else deadline, progress=progress)
    if pre_weights is not None and cfg["model"] != "affine":
        deformable["pre_weights"] = pre_weights.to(device)
        deformable.pop("initial_h2", None)
    with num_threads(choose_num_threads(cfg["threads"], source.numel())):
        result = register_tensors(
            source.to(device),
            target.to(device),
            cfg["model"],
            spacing=spacing,
            affine=bool(cfg["affine"]),
            affine_kwargs=aff_kwargs,
            **deformable,
        )
        used = torch.get_num_threads()
    model = cfg["model"]
    if model != "affine" and not cfg["affine"]:
        if iterations_done(result.extras["stages"], model) == 0:
            why = f" ({result.stopped})" if result.stopped else ""
            raise ValueError(f"nothing was registered: the {model} stage ran 0 iterations{why}")
    result.extras["runtime"] = {"threads": used, "device": str(result.phi_inv.device)}
    return result


def register_pair(
    pair: PreparedPair,
    cfg: Mapping[str, Any],
    *,
    progress: bool = False,
    pre_weights: Tensor | None = None,
    deadline: Deadline | None = None,
) -> RegistrationResult:
    """:func:`register_working` on a prepared pair (``pre_weights`` e.g. from
    :func:`region_pre_weights`); returns the working-grid result."""
    return register_working(
        pair.source,
        pair.target,
        pair.domain_spacing,
        cfg,
        progress=progress,
        pre_weights=pre_weights,
        deadline=deadline,
    )
