"""Integrals over the domain: the voxel volume and the kinetic energy ``<m, v>`` of a
momentum/velocity pair (the one formula behind the shooting energy of the losses and the energy
checks of the shooting models)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["momentum_energy", "voxel_volume"]


def voxel_volume(spacing: Sequence[float]) -> float:
    """``prod h_d``: the volume of one voxel of a grid of domain ``spacing`` (the weight of a
    voxel in a domain integral)."""
    vol = 1.0
    for h in spacing:
        vol *= float(h)
    return vol


def momentum_energy(m: Tensor, v: Tensor, spacing: Sequence[float]) -> Tensor:
    """``<m, v>`` integrated over the domain (voxel volume ``prod h_d``) for ``m, v: (B, D, *S)``
    on a grid of domain ``spacing``; returns ``(B,)``."""
    return (m * v).flatten(1).sum(dim=1) * voxel_volume(spacing)
