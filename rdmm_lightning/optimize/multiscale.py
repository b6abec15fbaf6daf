"""Multi-scale plans and input validation shared by the optimisers.

A scale ``s`` in (0, 1] works on images of size ``max(8, round(n * s))`` per axis (never more than
``n``) covering the same domain, so the domain spacing grows as the grid shrinks
(:meth:`Grid.low_res <rdmm_lightning.grid.Grid.low_res>`). Scales run coarse to fine; parameters
are upsampled (corners aligned) from one scale to the next. "Spacing" here is always the domain
spacing (domain units per voxel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..grid import Grid

__all__ = [
    "Scale",
    "make_scales",
    "per_scale",
    "check_images",
    "check_mask",
    "upsample_field",
]


@dataclass(frozen=True)
class Scale:
    """One level of a multi-scale plan.

    Attributes:
        factor: the scale factor ``s``.
        grid: image grid of this scale (``shape``, domain ``spacing``).
        param_grid: grid of the parameters (momentum, pre-weights) at this scale
            (``param_shape``, ``param_spacing``).
        iterations: L-BFGS iterations at this scale.
    """

    factor: float
    grid: Grid
    param_grid: Grid
    iterations: int

    @property
    def shape(self) -> tuple[int, ...]:
        """Image grid shape."""
        return self.grid.shape

    @property
    def spacing(self) -> tuple[float, ...]:
        """Image grid domain spacing."""
        return self.grid.domain_spacing

    @property
    def param_shape(self) -> tuple[int, ...]:
        """Parameter grid shape."""
        return self.param_grid.shape

    @property
    def param_spacing(self) -> tuple[float, ...]:
        """Parameter grid domain spacing."""
        return self.param_grid.domain_spacing


def per_scale(value: int | Sequence[int], scales: Sequence[float], name: str) -> tuple[int, ...]:
    """Broadcast an int to one entry per scale or check a sequence's length; entries >= 0."""
    if isinstance(value, int | float):
        values = (int(value),) * len(scales)
    else:
        values = tuple(int(v) for v in value)
    if len(values) != len(scales) or min(values) < 0:
        raise ValueError(
            f"{name} must be a non-negative int or one per scale ({len(scales)} scales); "
            f"got {value}"
        )
    return values


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in scales)
    except TypeError:
        raise ValueError(f"scales must be a sequence of numbers in (0, 1]; got {scales}") from None
    if not scales or min(scales) <= 0 or max(scales) > 1:
        raise ValueError(f"scales must be a non-empty sequence of numbers in (0, 1]; got {scales}")
    if list(scales) != sorted(scales):
        raise ValueError(f"scales must be sorted coarse to fine (ascending); got {scales}")
    return scales


def make_scales(
    shape: Sequence[int],
    spacing: Sequence[float],
    scales: Sequence[float],
    iterations: int | Sequence[int],
    param_factor: float = 1.0,
) -> list[Scale]:
    """Plan the scales for a full grid ``shape`` with domain ``spacing``.

    The parameter grid of scale ``s`` has factor ``s * param_factor`` relative to the full grid,
    except the coarsest scale of a multi-scale plan, which uses ``s`` (no extra reduction, as in
    the reference), so coarse shooting does not run on a uselessly small grid.
    """
    scales = _check_scales(scales)
    if not 0 < param_factor <= 1:
        raise ValueError(f"lowres_factor must be in (0, 1]; got {param_factor}")
    iters = per_scale(iterations, scales, "iterations")
    full = Grid.from_domain_spacing(shape, spacing)
    plan = []
    for k, (s, it) in enumerate(zip(scales, iters)):
        pf = s if (k == 0 and len(scales) > 1) else s * param_factor
        plan.append(Scale(s, full.low_res(s), full.low_res(pf), it))
    return plan


def check_images(source: Tensor, target: Tensor) -> None:
    """Raise ValueError unless source and target are float ``(B, C, *S)`` tensors of one shape,
    2D or 3D, at least 8 voxels per axis, on one device."""
    for name, x in (("source", source), ("target", target)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, 1, *S); got {type(x)}")
        if x.dim() not in (4, 5):
            raise ValueError(
                f"{name} must have shape (B, 1, *S) with 2 or 3 spatial dims; got {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
        if min(x.shape[2:]) < 8:
            raise ValueError(f"{name} needs at least 8 voxels per axis; got {tuple(x.shape)}")
    if source.shape != target.shape:
        raise ValueError(
            f"target must have the shape of source {tuple(source.shape)} (same working grid); "
            f"got {tuple(target.shape)}"
        )
    if source.dtype != target.dtype or source.device != target.device:
        raise ValueError(
            f"source and target must share dtype and device; got {source.dtype}/{source.device} "
            f"and {target.dtype}/{target.device}"
        )
    for name, x in (("source", source), ("target", target)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or Inf)")


def check_mask(mask: Tensor | None, source: Tensor) -> Tensor | None:
    """Check a target-grid weight mask ``(B, 1, *S)`` or ``(1, 1, *S)``; returns it in the
    images' dtype."""
    if mask is None:
        return None
    batch, spatial = source.shape[0], tuple(source.shape[2:])
    ok = (
        isinstance(mask, Tensor)
        and mask.dim() == source.dim()
        and mask.shape[0] in (1, batch)
        and mask.shape[1] == 1
        and tuple(mask.shape[2:]) == spatial
    )
    if not ok:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape ({batch}, 1, *{spatial}) or (1, 1, *S); got {got}")
    return mask.to(dtype=source.dtype, device=source.device)


def upsample_field(x: Tensor, shape: Sequence[int]) -> Tensor:
    """(Bi/tri)linear resampling of ``x: (B, C, *S)`` to ``shape`` over the same domain
    (corners aligned); returns ``x`` itself when the shape is unchanged."""
    shape = tuple(int(n) for n in shape)
    if tuple(x.shape[2:]) == shape:
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=shape, mode=mode, align_corners=True)
