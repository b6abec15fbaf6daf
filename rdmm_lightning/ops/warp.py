"""Warping images and label maps with pull-back maps, and composing maps.

Conventions: see :mod:`rdmm_lightning.ops.grid`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .grid import check_map, domain_spacing, identity_map, to_grid_sample

__all__ = ["warp_image", "warp_labels", "compose_maps", "sample_field"]


def _spacing_of(x: Tensor, spacing: Sequence[float] | None) -> tuple[float, ...]:
    shape = tuple(x.shape[2:])
    return domain_spacing(shape) if spacing is None else tuple(float(h) for h in spacing)


def sample_field(
    field: Tensor,
    points: Tensor,
    spacing: Sequence[float] | None = None,
    *,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> Tensor:
    """Sample ``field: (B, C, *S_in)`` at ``points: (B, D, *S_out)`` (domain coordinates of the
    field's grid, spacing ``spacing``; parity spacing if omitted). Returns ``(B, C, *S_out)``.

    ``mode="bilinear"`` is bilinear in 2D and trilinear in 3D.
    """
    check_map(points, "points")
    dim = points.shape[1]
    if field.dim() != dim + 2:
        raise ValueError(
            f"field must have shape (B, C, *S) with {dim} spatial dims to match points "
            f"{tuple(points.shape)}; got {tuple(field.shape)}"
        )
    if field.shape[0] != points.shape[0] and field.shape[0] != 1:
        raise ValueError(
            f"field batch {field.shape[0]} must be 1 or match points batch {points.shape[0]}"
        )
    if field.shape[0] == 1 and points.shape[0] > 1:
        field = field.expand(points.shape[0], *field.shape[1:])
    grid = to_grid_sample(points.to(field.dtype), field.shape[2:], _spacing_of(field, spacing))
    return F.grid_sample(field, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def warp_image(
    image: Tensor,
    phi: Tensor,
    spacing: Sequence[float] | None = None,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tensor:
    """Warp ``image: (B, C, *S_in)`` with the pull-back map ``phi: (B, D, *S_out)``:
    ``warped(x) = image(phi(x))``, bilinear/trilinear with zero padding by default."""
    if not torch.is_floating_point(image):
        raise ValueError(f"image must be floating point; got {image.dtype} (use warp_labels)")
    return sample_field(image, phi, spacing, mode=mode, padding_mode=padding_mode)


def warp_labels(labels: Tensor, phi: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
    """Warp a label map ``(B, 1, *S_in)`` with nearest-neighbour sampling (0 outside);
    the dtype is kept."""
    work = torch.float64 if labels.numel() and labels.abs().max() >= 2**24 else phi.dtype
    out = sample_field(labels.to(work), phi, spacing, mode="nearest", padding_mode="zeros")
    return out.round().to(labels.dtype)


def compose_maps(a: Tensor, b: Tensor, spacing_a: Sequence[float] | None = None) -> Tensor:
    """Composition ``(a o b)(x) = a(b(x))`` of pull-back maps ``a: (B, D, *S_a)`` and
    ``b: (B, D, *S_b)``; returns ``(B, D, *S_b)``.

    The displacement ``a - id`` is sampled at ``b`` with border padding, so translations
    continue correctly outside the grid of ``a``.
    """
    check_map(a, "a")
    check_map(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same D; got {tuple(a.shape)} and {tuple(b.shape)}")
    spacing_a = _spacing_of(a, spacing_a)
    ident = identity_map(a.shape[2:], spacing_a, dtype=a.dtype, device=a.device)
    return b + sample_field(a - ident, b, spacing_a, padding_mode="border")
