"""Tiny synthetic images for the optimiser tests: textured blobs and known affine maps."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rdmm_lightning.ops import gaussian_smooth, identity_map
from rdmm_lightning.ops.affine import affine_to_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.warp import warp_image


def _vec(values, dim: int) -> Tensor:
    return torch.tensor(values[:dim], dtype=torch.float32).view(1, dim, *([1] * dim))


def textured_image(shape, seed: int = 0, centre=(0.45, 0.55, 0.5)) -> Tensor:
    """``(1, 1, *S)`` image in [0, 1]: an ellipse, a small inner ellipse and a box with sharp
    edges on a smooth random texture that fades out towards the border."""
    dim = len(shape)
    x = identity_map(shape)
    g = torch.Generator().manual_seed(seed)
    noise = gaussian_smooth(torch.randn(1, 1, *shape, generator=g), 0.06, domain_spacing(shape))
    noise = noise / noise.std()
    c = _vec(centre, dim)
    e1 = (((x - c) / _vec((0.25, 0.17, 0.2), dim)) ** 2).sum(1, keepdim=True)
    e2 = (((x - c - _vec((0.1, -0.1, -0.05), dim)) / _vec((0.08, 0.1, 0.09), dim)) ** 2).sum(
        1, keepdim=True
    )
    box = ((x - c - _vec((-0.2, -0.25, 0.2), dim)).abs() < _vec((0.06, 0.05, 0.07), dim)).all(
        1, keepdim=True
    )
    fg = torch.exp(-((x - c) ** 2).sum(1, keepdim=True) / (2 * 0.3**2))
    img = 0.6 * torch.sigmoid((1 - e1) * 20) + 0.4 * torch.sigmoid((1 - e2) * 20) + 0.8 * box
    return (0.7 * img + 0.15 * noise * fg + 0.2 * fg).clamp(0, 1)


def known_affine(dim: int, angle_deg: float = 12.0, scale: float = 1.08, shift=None) -> Tensor:
    """``(1, D, D + 1)`` pull-back matrix: rotation (about axis 2 in 3D) and isotropic scaling
    about the domain centre (0.5, ...) and a translation ``shift``."""
    a = math.radians(angle_deg)
    rot = torch.eye(dim)
    rot[0, 0], rot[0, 1], rot[1, 0], rot[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    mat = rot * scale
    c = torch.full((dim,), 0.5)
    t = torch.tensor((0.05, -0.04, 0.03)[:dim] if shift is None else shift[:dim])
    b = c + t - mat @ c
    return torch.cat([mat, b[:, None]], dim=1)[None]


def affine_pair(shape, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
    """``(source, target, matrix)`` with ``target = source o (x -> A x + b)``."""
    src = textured_image(shape)
    mat = known_affine(len(shape), **kwargs)
    sp = domain_spacing(shape)
    return src, warp_image(src, affine_to_map(mat, shape, sp), sp), mat


def deformed_pair(shape, amplitude: float = 0.06, seed: int = 3) -> tuple[Tensor, Tensor]:
    """``(source, target)``: the target is the source under a smooth random displacement of
    about ``amplitude`` (domain units) at its peak."""
    src = textured_image(shape)
    sp = domain_spacing(shape)
    g = torch.Generator().manual_seed(seed)
    disp = gaussian_smooth(torch.randn(1, len(shape), *shape, generator=g), 0.12, sp)
    disp = disp * (amplitude / disp.abs().max())
    return src, warp_image(src, identity_map(shape) + disp, sp)
