"""Shared test helpers: smooth random momenta and pre-weights on tiny grids."""

from __future__ import annotations

import math

import torch

from rdmm_lightning.ops import gaussian_smooth, identity_map, normalize_pre_weights
from rdmm_lightning.ops.grid import domain_spacing


def bump(shape, width: float, dtype=torch.float64, center: float = 0.5) -> torch.Tensor:
    """Gaussian bump ``(1, 1, *S)`` of std ``width`` (domain units) at the domain centre."""
    x = identity_map(shape, dtype=dtype)
    return torch.exp(-((x - center) ** 2).sum(1, keepdim=True) / (2 * width**2))


def smooth_momentum(
    shape,
    batch: int = 2,
    smooth: float = 0.08,
    width: float = 0.12,
    seed: int = 0,
    dtype=torch.float64,
) -> torch.Tensor:
    """Smooth random momentum ``(B, D, *S)`` concentrated in the middle of the domain."""
    g = torch.Generator().manual_seed(seed)
    sp = domain_spacing(shape)
    noise = torch.randn(batch, len(shape), *shape, generator=g, dtype=dtype)
    return gaussian_smooth(noise, smooth, sp) * bump(shape, width, dtype)


def smooth_pre_weights(shape, n: int = 3, batch: int = 2, seed: int = 1, dtype=torch.float64):
    """Smooth, spatially varying pre-weights ``(B, N, *S)`` with ``sum h^2 = 1``."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, n, *shape, generator=g, dtype=dtype)
    raw = gaussian_smooth(raw, 0.1, domain_spacing(shape))
    return normalize_pre_weights(raw * 10, activation="softplus")


def max_displacement_voxels(phi_inv: torch.Tensor) -> float:
    """Largest displacement of a map in voxels (parity spacing)."""
    shape = phi_inv.shape[2:]
    sp = torch.tensor(domain_spacing(shape), dtype=phi_inv.dtype).view(1, -1, *[1] * len(shape))
    ident = identity_map(shape, dtype=phi_inv.dtype)
    return float(((phi_inv - ident).abs() / sp).max())


def scale_to_displacement(shoot, m0: torch.Tensor, target_voxels: float, **kw) -> torch.Tensor:
    """Rescale ``m0`` (twice, linearised) so that ``shoot(m0)`` displaces ~``target_voxels``."""
    for _ in range(2):
        d = max_displacement_voxels(shoot(m0, **kw).phi_inv)
        m0 = m0 * (target_voxels / d)
    return m0


def rotation_affine(angle: float, centre, shift, dim: int = 2) -> torch.Tensor:
    """Pull-back matrix ``(1, D, D + 1)`` float64: rotation by ``angle`` (first two axes) about
    ``centre``, then ``shift``."""
    a = torch.eye(dim, dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    a[0, 0], a[0, 1], a[1, 0], a[1, 1] = c, -s, s, c
    centre = torch.as_tensor(centre, dtype=torch.float64)
    b = centre - a @ centre + torch.as_tensor(shift, dtype=torch.float64)
    return torch.cat([a, b[:, None]], dim=1)[None]


def inside_domain(points: torch.Tensor, shape, spacing) -> torch.Tensor:
    """``(B, D, *S)`` mask (repeated over D) of map values ``points: (B, D, *S)`` inside the
    grid's domain."""
    ok = torch.ones_like(points[:, :1], dtype=torch.bool)
    for d, (n, h) in enumerate(zip(shape, spacing)):
        ok &= (points[:, d : d + 1] >= 0) & (points[:, d : d + 1] <= (n - 1) * h)
    return ok.expand_as(points)
