"""Multi-step affine network: K passes of one encoder/head, each on the source warped by the
affine map composed so far (composition order: see :mod:`rdmm_lightning.ops.affine`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..ops.affine import (
    affine_to_map,
    compose_affine,
    domain_centre,
    identity_affine,
    matrix_from_params,
)
from ..ops.grid import domain_spacing
from ..ops.moments import center_of_mass_translation
from ..ops.warp import warp_image
from ..options import AffineInit, values
from .precision import check_precision, network_autocast
from .unet import channels_last, conv_layer

__all__ = ["AFFINE_INITS", "MultiStepAffineNet", "AffineOutput"]

AFFINE_INITS = values(AffineInit)
"""Starting points of :class:`MultiStepAffineNet` (``init``)."""


@dataclass
class AffineOutput:
    """Result of :class:`MultiStepAffineNet`.

    Attributes:
        matrix: total pull-back ``[A | b]: (B, D, D + 1)`` (``phi^{-1}(x) = A x + b``).
        steps: the per-step pull-backs ``(B, D, D + 1)``, first step first.
        centre: domain centre ``(D,)`` used by the centred parametrisation.
        learned: the part the network predicted, ``steps[0] o steps[1] o ...``; ``matrix`` is
            ``learned`` after the start (``init``: identity, or the centre-of-mass translation).
    """

    matrix: Tensor
    centre: Tensor
    steps: list[Tensor] = field(default_factory=list)
    learned: Tensor | None = None


class _Encoder(nn.Module):
    """Shared stem on each image, then strided convolutions on the pair and adaptive average
    pooling to ``pooled ** D`` cells (any input size)."""

    def __init__(self, dim: int, features: Sequence[int], pooled: int, slope: float):
        super().__init__()
        f0 = features[0]
        self.stem = nn.Sequential(conv_layer(dim, 1, f0), nn.LeakyReLU(slope))
        layers: list[nn.Module] = []
        cin = 2 * f0
        for cout in features[1:]:
            layers += [conv_layer(dim, cin, cout, 3, 2), nn.LeakyReLU(slope)]
            layers += [conv_layer(dim, cout, cout), nn.LeakyReLU(slope)]
            cin = cout
        self.body = nn.Sequential(*layers)
        pool = nn.AdaptiveAvgPool2d if dim == 2 else nn.AdaptiveAvgPool3d
        self.pool = pool(pooled)
        self.out_features = cin * pooled**dim

    def forward(self, moving: Tensor, target: Tensor) -> Tensor:
        x = channels_last(torch.cat([self.stem(moving), self.stem(target)], dim=1))
        return self.pool(self.body(x)).flatten(1)


class MultiStepAffineNet(nn.Module):
    """Predicts an affine pull-back map from ``(source, target)`` in ``num_steps`` passes.

    Args:
        dim: 2 or 3.
        features: encoder channels (first: the shared stem; then one stride-2 stage each).
        pooled: cells per axis of the adaptive pooling before the fully connected head.
        hidden: width of the hidden fully connected layer.
        num_steps: default number of passes K.
        slope: LeakyReLU slope.
        init: ``"identity"``, or ``"com"``: start from the translation that moves the source's
            intensity centre of mass onto the target's (as ANTs' and our affine-opt's
            initialisation; heads scanned in different positions then start roughly aligned).
        precision: compute precision of the encoder and head (``"float32"`` or ``"bfloat16"``
            mixed precision, :class:`~rdmm_lightning.options.NetworkPrecision`); a plain
            attribute, not saved in the state dict.

    The head's last layer is zero-initialised, so an untrained net returns ``init``. Inputs
    are images ``(B, 1, *S)`` in [0, 1] (shifted to [-1, 1] inside).
    """

    has_network_precision = True  # precision is settable (set_network_precision)

    def __init__(
        self,
        dim: int,
        features: Sequence[int] = (16, 32, 32, 64, 64),
        pooled: int = 4,
        hidden: int = 128,
        num_steps: int = 3,
        slope: float = 0.2,
        init: str = "identity",
        precision: str = "float32",
    ):
        super().__init__()
        self.precision = check_precision(precision)
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3; got {dim}")
        if init not in AFFINE_INITS:
            raise ValueError(f"init must be one of {', '.join(AFFINE_INITS)}; got {init!r}")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features needs >= 2 positive entries; got {features}")
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be >= 1; got {num_steps}")
        self.dim, self.num_steps, self.init = dim, int(num_steps), init
        self.encoder = _Encoder(dim, features, int(pooled), slope)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.out_features, int(hidden)),
            nn.LeakyReLU(slope),
            nn.Linear(int(hidden), dim * dim + dim),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def step_params(self, moving: Tensor, target: Tensor) -> Tensor:
        """Centred parameters ``(B, D*D + D)`` of one step's pull-back."""
        with network_autocast(moving, self.precision):
            params = self.head(self.encoder(2.0 * moving - 1.0, 2.0 * target - 1.0))
        return params.to(moving.dtype)

    def forward(
        self,
        source: Tensor,
        target: Tensor,
        spacing: Sequence[float] | None = None,
        num_steps: int | None = None,
    ) -> AffineOutput:
        """Run K passes; ``source, target: (B, 1, *S)``; ``spacing`` the domain spacing."""
        if source.dim() != self.dim + 2 or source.shape != target.shape:
            raise ValueError(
                f"source and target must both be (B, 1, *S) with {self.dim} spatial dims; got "
                f"{tuple(source.shape)} and {tuple(target.shape)}"
            )
        shape = tuple(source.shape[2:])
        spacing = domain_spacing(shape) if spacing is None else tuple(spacing)
        centre = domain_centre(shape, spacing, source)
        matrix = self.initial_affine(source, target, spacing)
        learned = identity_affine(source.shape[0], self.dim, source)
        steps: list[Tensor] = []
        for k in range(self.num_steps if num_steps is None else int(num_steps)):
            moving = source
            if k > 0 or self.init != "identity":
                moving = warp_image(source, affine_to_map(matrix, shape, spacing), spacing)
            delta = matrix_from_params(self.step_params(moving, target), centre)
            steps.append(delta)
            matrix = compose_affine(matrix, delta)  # pull-backs: T_new = T o Delta
            learned = compose_affine(learned, delta)
        return AffineOutput(matrix=matrix, centre=centre, steps=steps, learned=learned)

    def initial_affine(self, source: Tensor, target: Tensor, spacing: Sequence[float]) -> Tensor:
        """The pull-back ``(B, D, D + 1)`` the first pass starts from (see ``init``)."""
        if self.init == "com":
            return center_of_mass_translation(source, target, spacing)
        return identity_affine(source.shape[0], self.dim, source)
