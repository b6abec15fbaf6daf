"""One pair of image files through a trained network (the steps of ``rdmm infer``).

The pair is read and put on the grid the network was trained on: the target's grid through the
checkpoint's training preprocessing (:class:`~rdmm_lightning.io.training_grid.TrainingGrid`:
e.g. reoriented to RAS+ and resized), or, for modules without that record, a grid of the
module's ``image_shape`` over the target's field of view. The source is resampled into it in
physical space, and the module predicts the maps (K network passes, optionally N steps of
instance optimisation).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..io import Volume, read_image
from ..registration import RegistrationResult
from ..runtime import choose_num_threads, num_threads
from .pair import PreparedPair, VolumeLike, prepare_pair

__all__ = ["register_with_network"]


def register_with_network(
    module: Any,
    source: VolumeLike,
    target: VolumeLike,
    *,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
    num_steps: int | None = None,
    refine_steps: int = 0,
    name: str = "checkpoint",
    threads: int | None = None,
) -> tuple[PreparedPair, RegistrationResult]:
    """Register ``source`` to ``target`` with a loaded affine/svf/lddmm/rdmm network module.

    Args:
        module: an :class:`~rdmm_lightning.models.AffineNetModule` or
            :class:`~rdmm_lightning.models.RegistrationNetModule` (its device is used).
        source, target, source_label, target_label: files or :class:`Volume` s.
        num_steps: network passes K (None: as trained).
        refine_steps: instance-optimisation steps after the network (not for affine).
        name: how error messages name the model (e.g. the checkpoint path).
        threads: intra-op threads for the network step (None: ``RDMM_NUM_THREADS`` or
            :func:`~rdmm_lightning.runtime.choose_num_threads` for the working grid); the
            caller's count is restored afterwards.

    Returns:
        The prepared pair (working grid, volumes as read) and the result on the working grid,
        on the CPU; ``result.extras["runtime"]`` records the thread count torch reported during
        the network step and the module's device.

    Raises:
        ValueError: one line naming the file: 2D/3D mismatch with the model, unreadable or
            invalid inputs (:func:`prepare_pair`), or refine steps for an affine model.
    """
    if module.model_name == "affine" and refine_steps:
        raise ValueError(f"{name}: refine steps apply to svf/lddmm/rdmm models, not affine")
    target_volume = target if isinstance(target, Volume) else read_image(target)
    if target_volume.dim != module.dim:
        raise ValueError(
            f"{name}: the {module.model_name} model was trained on a {module.dim}D grid "
            f"{tuple(module.image_shape)}, but {target_volume.path or 'the target'} is "
            f"{target_volume.dim}D"
        )
    pair = prepare_pair(
        source,
        target_volume,
        source_label=source_label,
        target_label=target_label,
        working_shape=module.image_shape,
        working_spacing_mode=module.spacing_mode,
        training_grid=module.training_grid,
    )
    src, tgt = pair.source.to(module.device), pair.target.to(module.device)
    with num_threads(choose_num_threads(threads, math.prod(pair.working_shape))):
        if module.model_name == "affine":
            result = module.predict(src, tgt, num_steps, spacing=pair.spacing)
        else:
            result = module.predict(src, tgt, num_steps, refine_steps, spacing=pair.spacing)
        used = torch.get_num_threads()
    result = result.cpu()
    result.extras["runtime"] = {"threads": used, "device": str(src.device)}
    return pair, result
