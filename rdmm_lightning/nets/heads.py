"""UNet heads: the initial momentum ``m0`` and the RDMM pre-weights ``h0`` on the low-resolution
shooting grid, from a (moving, target) image pair."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.image_force import image_force
from ..ops.pre_weights import normalize_pre_weights
from ..options import PreWeightActivation, either, values
from .unet import UNet

__all__ = ["MomentumNet", "PreWeightNet", "pair_input"]


def pair_input(moving: Tensor, target: Tensor) -> Tensor:
    """Network input ``(B, 2, *S)``: both images ``(B, 1, *S)`` in [0, 1] shifted to [-1, 1]."""
    if moving.shape != target.shape or moving.shape[1] != 1:
        raise ValueError(
            f"moving and target must both be (B, 1, *S); got {tuple(moving.shape)} and "
            f"{tuple(target.shape)}"
        )
    return torch.cat([moving, target], dim=1) * 2.0 - 1.0


def _resize(x: Tensor, shape: Sequence[int] | None) -> Tensor:
    """Corner-aligned (bi/tri)linear resize of ``(B, C, *S)`` to ``shape`` (None: unchanged)."""
    if shape is None or tuple(x.shape[2:]) == tuple(shape):
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=tuple(int(n) for n in shape), mode=mode, align_corners=True)


class MomentumNet(nn.Module):
    """``(moving, target) -> m0: (B, D, *S_out)``: a UNet with D outputs, resized to the
    shooting grid ``S_out``.

    Args:
        dim: 2 or 3.
        features: UNet channels per level.
        init_std: std of the output layer's initial weights (zero bias), so the first
            predictions are small momenta (near-identity maps).
        clamp: optional bound ``|m0| <= clamp`` (the reference's RDMM net uses 1).
        image_force: also feed the image force ``f`` (:func:`~rdmm_lightning.ops.image_force`,
            ``D`` more input channels) and add ``force_scale * f`` to the output, a learnt
            step along the squared-difference descent direction (``force_scale`` starts at 0:
            the untrained net still predicts small momenta). Needs ``spacing`` in ``forward``.
        precision: the UNet's compute precision (:class:`~rdmm_lightning.options.NetworkPrecision`).
    """

    def __init__(
        self,
        dim: int,
        features: Sequence[int] = (16, 32, 32, 64),
        init_std: float = 1e-3,
        clamp: float | None = None,
        image_force: bool = False,
        precision: str = "float32",
    ):
        super().__init__()
        self.dim = dim
        self.image_force = bool(image_force)
        inputs = 2 + (dim if self.image_force else 0)
        self.unet = UNet(dim, inputs, dim, features, precision=precision)
        self.unet.init_output(std=init_std, bias=0.0)
        self.clamp = None if clamp is None else float(clamp)
        self.force_scale = nn.Parameter(torch.zeros(())) if self.image_force else None

    def forward(
        self,
        moving: Tensor,
        target: Tensor,
        out_shape: Sequence[int] | None = None,
        spacing: Sequence[float] | None = None,
    ) -> Tensor:
        """``m0: (B, D, *out_shape)`` from ``moving, target: (B, 1, *S)``; ``spacing``: domain
        spacing of ``S`` (needed with ``image_force``)."""
        x = pair_input(moving, target)
        if self.force_scale is None:
            m0 = self.unet(x)
        else:
            if spacing is None or len(spacing) != self.dim:
                raise ValueError(
                    f"MomentumNet(image_force=True) needs the {self.dim} domain spacings of the "
                    f"input grid; got {spacing}"
                )
            force = image_force(moving, target, spacing)
            m0 = self.unet(torch.cat([x, force], dim=1)) + self.force_scale * force
        m0 = _resize(m0, out_shape)
        if self.clamp is not None:
            m0 = m0.clamp(-self.clamp, self.clamp)
        return m0


def _inverse_activation(h: float, activation: str) -> float:
    if activation == "relu":
        return h
    return math.log(math.expm1(max(h, 1e-3)))  # softplus^{-1}


class PreWeightNet(nn.Module):
    """``(moving, target) -> h0: (B, N, *S_out)`` with ``h >= 0`` and ``sum_i h_i^2 = 1``
    (:func:`~rdmm_lightning.ops.pre_weights.normalize_pre_weights`).

    Args:
        dim: 2 or 3.
        num_kernels: N, the number of Gaussians of the RDMM smoother.
        prior_h2: initial squared pre-weights (normalised to sum 1); the output bias is set so an
            untrained net predicts these everywhere. Default uniform.
        features: UNet channels per level.
        activation: ``"softplus"`` (default; no dead units) or ``"relu"``.
        init_std: std of the output layer's initial weights.
        precision: the UNet's compute precision (:class:`~rdmm_lightning.options.NetworkPrecision`).
    """

    def __init__(
        self,
        dim: int,
        num_kernels: int,
        prior_h2: Sequence[float] | None = None,
        features: Sequence[int] = (16, 32, 32, 64),
        activation: str = "softplus",
        init_std: float = 1e-3,
        precision: str = "float32",
    ):
        super().__init__()
        if activation not in values(PreWeightActivation):
            raise ValueError(
                f"activation must be {either(PreWeightActivation)}; got {activation!r}"
            )
        h2 = [1.0] * num_kernels if prior_h2 is None else [float(v) for v in prior_h2]
        if len(h2) != num_kernels or min(h2) < 0 or sum(h2) <= 0:
            raise ValueError(
                f"prior_h2 must be {num_kernels} non-negative numbers with a positive sum; "
                f"got {prior_h2}"
            )
        self.dim, self.num_kernels, self.activation = dim, num_kernels, activation
        self.unet = UNet(dim, 2, num_kernels, features, precision=precision)
        total = sum(h2)
        bias = [_inverse_activation(math.sqrt(v / total), activation) for v in h2]
        self.unet.init_output(std=init_std, bias=bias)

    def forward(
        self, moving: Tensor, target: Tensor, out_shape: Sequence[int] | None = None
    ) -> Tensor:
        raw = _resize(self.unet(pair_input(moving, target)), out_shape)
        return normalize_pre_weights(raw, activation=self.activation)
