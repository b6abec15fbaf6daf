"""Image moments in domain coordinates (see :mod:`rdmm_lightning.ops.grid` for the convention)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .grid import identity_map

__all__ = ["center_of_mass", "center_of_mass_translation"]


def center_of_mass(image: Tensor, spacing: Sequence[float]) -> Tensor:
    """Intensity centre of mass ``(B, D)`` in domain coordinates of ``image: (B, C, *S)``
    (negative intensities count as 0; the domain centre where the image is empty)."""
    shape = tuple(image.shape[2:])
    weight = image.clamp_min(0).sum(dim=1, keepdim=True).flatten(2)  # (B, 1, N)
    ident = identity_map(shape, spacing, dtype=image.dtype, device=image.device).flatten(2)
    mass = weight.sum(dim=2)  # (B, 1)
    centre = ident.mean(dim=2).expand(image.shape[0], -1)  # (B, D) fallback
    com = (weight * ident).sum(dim=2) / mass.clamp_min(torch.finfo(image.dtype).tiny)
    return torch.where(mass > 0, com, centre)


def center_of_mass_translation(source: Tensor, target: Tensor, spacing: Sequence[float]) -> Tensor:
    """Pull-back affine ``[I | c_s - c_t]: (B, D, D + 1)`` that maps the target's intensity centre
    of mass ``c_t`` onto the source's ``c_s`` (no gradient flows through it)."""
    dim = source.dim() - 2
    shift = (center_of_mass(source, spacing) - center_of_mass(target, spacing)).detach()
    eye = torch.eye(dim, dtype=source.dtype, device=source.device).expand(source.shape[0], -1, -1)
    return torch.cat([eye, shift.unsqueeze(-1)], dim=2)
