r"""RDMM pre-weights for the optimiser: validation, transport into the shooting frame, resampling
and constant starting values. Optimised pre-weights are parametrised by raw values ``x`` (see
:func:`rdmm_lightning.ops.pre_weights.pre_weights_from_raw`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.pre_weights import PRE_WEIGHT_FLOOR
from ..ops.resample import resample_image
from ..ops.warp import sample_field

__all__ = [
    "check_pre_weights",
    "renormalize",
    "pre_weights_in_frame",
    "at_grid",
    "global_pre_weights",
]


def check_pre_weights(pre_weights: Tensor, source: Tensor, num_kernels: int) -> Tensor:
    """Check ``(B, N, *S)`` (or ``(1, N, *S)``) non-negative finite pre-weights on the source grid;
    returns them in the source's dtype/device, broadcast to the batch and renormalised."""
    batch, spatial = source.shape[0], tuple(source.shape[2:])
    ok = (
        isinstance(pre_weights, Tensor)
        and pre_weights.dim() == source.dim()
        and pre_weights.shape[0] in (1, batch)
        and pre_weights.shape[1] == num_kernels
        and tuple(pre_weights.shape[2:]) == spatial
    )
    if not ok:
        got = tuple(pre_weights.shape) if isinstance(pre_weights, Tensor) else type(pre_weights)
        raise ValueError(
            f"pre_weights must have shape (B, N, *S) = ({batch}, {num_kernels}, "
            f"{', '.join(map(str, spatial))}) with N = len(sigmas); got {got}"
        )
    h = pre_weights.to(dtype=source.dtype, device=source.device)
    if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
        raise ValueError("pre_weights must be finite and non-negative")
    return renormalize(h.expand(batch, *h.shape[1:]))


def renormalize(h: Tensor) -> Tensor:
    """Per-voxel L2 normalisation ``h / |h|`` with a small floor (``sum_i h_i^2 = 1``)."""
    h = h.clamp_min(0)
    norm = h.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(PRE_WEIGHT_FLOOR)
    out = h / norm
    # voxels whose weights were all ~0 get uniform weights
    flat = norm <= PRE_WEIGHT_FLOOR
    if bool(flat.any()):
        uniform = torch.full_like(out, h.shape[1] ** -0.5)
        out = torch.where(flat, uniform, out)
    return out


def pre_weights_in_frame(
    h_source: Tensor, initial_map: Tensor | None, spacing: Sequence[float]
) -> Tensor:
    """Pre-weights on the source grid pulled into the shooting frame ``h o A`` (border
    padding, renormalised); unchanged without an initial map."""
    if initial_map is None:
        return h_source
    return renormalize(sample_field(h_source, initial_map, spacing, padding_mode="border"))


def at_grid(h: Tensor, shape: Sequence[int]) -> Tensor:
    """Pre-weights resampled (anti-aliased) to ``shape`` and renormalised."""
    return renormalize(resample_image(h, shape))


def global_pre_weights(
    h2: Sequence[float], batch: int, shape: Sequence[int], like: Tensor
) -> Tensor:
    """Spatially constant pre-weights ``(B, N, *S)`` with ``h_i^2`` proportional to ``h2``."""
    h2_t = torch.tensor([float(v) for v in h2], dtype=like.dtype, device=like.device)
    if h2_t.numel() == 0 or bool((h2_t < 0).any()) or float(h2_t.sum()) <= 0:
        raise ValueError(f"initial_h2 must be non-negative with a positive sum; got {list(h2)}")
    h = (h2_t / h2_t.sum()).sqrt().view(1, -1, *([1] * len(shape)))
    return renormalize(h.expand(batch, -1, *shape).clone())
