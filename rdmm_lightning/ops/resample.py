"""Resampling of maps (through their displacement) and images (with anti-aliasing)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from .gaussian import gaussian_taps
from .grid import check_map, domain_spacing, identity_map

__all__ = ["resample_map", "resample_image", "gaussian_blur_voxels"]


def _interp_mode(dim: int) -> str:
    return "bilinear" if dim == 2 else "trilinear"


def resample_map(
    phi: Tensor,
    shape: Sequence[int],
    spacing: Sequence[float] | None = None,
    new_spacing: Sequence[float] | None = None,
) -> Tensor:
    """Resample a map ``(B, D, *S)`` onto a grid of spatial ``shape`` covering the same domain.

    The displacement ``phi - id`` is (bi/tri)linearly interpolated (corners aligned, the domain
    stays the same) and the identity of the new grid is added back. Spacings default to parity.
    """
    check_map(phi, "phi")
    dim = phi.shape[1]
    shape = tuple(int(n) for n in shape)
    if len(shape) != dim:
        raise ValueError(f"shape must have {dim} entries; got {shape}")
    spacing = domain_spacing(phi.shape[2:]) if spacing is None else tuple(spacing)
    new_spacing = domain_spacing(shape) if new_spacing is None else tuple(new_spacing)
    if tuple(phi.shape[2:]) == shape:
        return phi
    disp = phi - identity_map(phi.shape[2:], spacing, dtype=phi.dtype, device=phi.device)
    disp = F.interpolate(disp, size=shape, mode=_interp_mode(dim), align_corners=True)
    return disp + identity_map(shape, new_spacing, dtype=phi.dtype, device=phi.device)


def gaussian_blur_voxels(image: Tensor, sigmas_voxels: Sequence[float]) -> Tensor:
    """Separable Gaussian blur of ``(B, C, *S)`` with per-axis sigma in voxels (replicate
    padding, kernels truncated at 3 sigma); a sigma of 0 leaves that axis unchanged."""
    dim = image.dim() - 2
    b, c = image.shape[:2]
    out = image.reshape(b * c, 1, *image.shape[2:])
    conv = F.conv2d if dim == 2 else F.conv3d
    for axis, sigma in enumerate(sigmas_voxels):
        if sigma <= 0:
            continue
        k = gaussian_taps(float(sigma), 3.0, dtype=image.dtype, device=image.device)
        view = [1] * dim
        view[axis] = k.numel()
        pad = [0, 0] * dim
        r = k.numel() // 2
        pad[2 * (dim - 1 - axis)] = r
        pad[2 * (dim - 1 - axis) + 1] = r
        out = conv(F.pad(out, pad, mode="replicate"), k.view(1, 1, *view))
    return out.reshape(b, c, *image.shape[2:])


def resample_image(image: Tensor, shape: Sequence[int], antialias: bool = True) -> Tensor:
    """Resample an image ``(B, C, *S)`` to spatial ``shape`` over the same domain (corners
    aligned). When downsampling an axis by a factor ``f > 1`` and ``antialias`` is set, the image
    is first blurred with a Gaussian of sigma ``(f - 1) / 2`` voxels along it."""
    dim = image.dim() - 2
    shape = tuple(int(n) for n in shape)
    if len(shape) != dim:
        raise ValueError(f"shape must have {dim} entries; got {shape}")
    if tuple(image.shape[2:]) == shape:
        return image
    if antialias:
        factors = [(n - 1) / max(m - 1, 1) for n, m in zip(image.shape[2:], shape)]
        sigmas = [(f - 1.0) / 2.0 if f > 1.0 else 0.0 for f in factors]
        if any(s > 0 for s in sigmas):
            image = gaussian_blur_voxels(image, sigmas)
    return F.interpolate(image, size=shape, mode=_interp_mode(dim), align_corners=True)
