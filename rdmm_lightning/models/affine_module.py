"""``AffineNetModule``: training and inference of the multi-step affine network."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..losses import affine_symmetry_loss, similarity_from_name
from ..nets.affine_net import AffineOutput, MultiStepAffineNet
from ..ops.affine import affine_deviation, affine_to_map, invert_affine
from ..ops.warp import warp_image
from ..result import RegistrationResult
from ..viz import registration_figure
from .base import RegistrationModuleBase
from .hparams import plain

__all__ = ["AffineNetModule", "AFFINE_NET_KEYS"]

AFFINE_NET_KEYS = ("features", "pooled", "hidden", "num_steps", "init")
"""Hyper-parameters that define the :class:`MultiStepAffineNet` architecture."""


class AffineNetModule(RegistrationModuleBase):
    """LightningModule of the multi-step affine net.

    Loss per direction: ``similarity(source o A, target) + reg_weight * (|A - I|^2 + |t|^2)``
    (``A``: the part the network predicts, after the ``init`` translation);
    with ``bidirectional`` (or ``symmetry_weight > 0``) both directions are averaged and
    ``symmetry_weight * (|A_st A_ts - I|^2 + |A_st b_ts + b_st|^2)`` is added.

    Args:
        image_shape: training grid (2 or 3 sizes); ``rdmm infer`` resamples inputs to it.
        spacing_mode: ``"parity"`` or ``"physical"`` domain spacing.
        features, pooled, hidden: encoder/head sizes (:class:`MultiStepAffineNet`).
        num_steps: affine passes K (schedulable, e.g. 1 then 3).
        init: ``"identity"`` or ``"com"`` (start from the centre-of-mass translation; for
            images scanned in different positions, e.g. native-space heads).
        network_precision: ``"float32"`` (default) or ``"bfloat16"`` mixed precision of the
            encoder and head (:class:`~rdmm_lightning.options.NetworkPrecision`).
        similarity, similarity_kwargs: loss name (default ``"mk-lncc"``) and its arguments.
        reg_weight: weight of the distance from the identity (schedulable).
        symmetry_weight: weight of the affine symmetry loss (schedulable).
        bidirectional: also register target -> source (schedulable).
        lr, weight_decay, lr_step_epochs, lr_gamma: Adam and an optional StepLR.
        log_figures: log one validation figure per epoch.
    """

    model_name = "affine"
    loss_terms = ("loss", "similarity", "regularity", "symmetry")
    schedule_attributes = ("num_steps", "reg_weight", "symmetry_weight", "bidirectional")

    def __init__(
        self,
        image_shape: Sequence[int],
        spacing_mode: str = "parity",
        features: Sequence[int] = (16, 32, 32, 64, 64),
        pooled: int = 4,
        hidden: int = 128,
        num_steps: int = 3,
        init: str = "identity",
        network_precision: str = "float32",
        similarity: str = "mk-lncc",
        similarity_kwargs: Mapping[str, Any] | None = None,
        reg_weight: float = 0.01,
        symmetry_weight: float = 0.0,
        bidirectional: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_step_epochs: int | None = None,
        lr_gamma: float = 0.5,
        log_figures: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.hparams.update(plain(dict(self.hparams)))
        self._setup_common(image_shape, spacing_mode)
        self.net = MultiStepAffineNet(
            self.dim, features, pooled, hidden, num_steps, init=init, precision=network_precision
        )
        self.similarity = similarity_from_name(similarity, **dict(similarity_kwargs or {}))
        self.num_steps = int(num_steps)
        self.reg_weight = float(reg_weight)
        self.symmetry_weight = float(symmetry_weight)
        self.bidirectional = bool(bidirectional)

    def net_config(self) -> dict[str, Any]:
        """Constructor arguments of the affine net (stored by modules that embed it)."""
        return {"dim": self.dim, **{k: plain(self.hparams[k]) for k in AFFINE_NET_KEYS}}

    def forward(
        self,
        source: Tensor,
        target: Tensor,
        spacing: Sequence[float],
        num_steps: int | None = None,
    ) -> AffineOutput:
        steps = self.num_steps if num_steps is None else num_steps
        return self.net(source, target, spacing, steps)

    def _step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> Tensor:
        source, target = batch["source"], batch["target"]
        b, shape = source.shape[0], tuple(source.shape[2:])
        spacing = self.batch_spacing(batch, shape)
        both = self.bidirectional or self.symmetry_weight > 0
        if both:
            source, target = torch.cat([source, target]), torch.cat([target, source])
        out = self(source, target, spacing)
        phi_inv = affine_to_map(out.matrix, shape, spacing)
        warped = warp_image(source, phi_inv, spacing)
        sim = self.similarity(warped, target)
        reg = affine_deviation(out.learned, out.centre).mean()
        loss = sim + self.reg_weight * reg
        terms = {"similarity": sim, "regularity": reg}
        if both:
            m = out.matrix
            d = self.dim
            sym = affine_symmetry_loss(m[:b, :, :d], m[:b, :, d], m[b:, :, :d], m[b:, :, d])
            terms["symmetry"] = sym
            loss = loss + self.symmetry_weight * sym
        terms["loss"] = loss
        for name, value in terms.items():
            self.log_value(stage, name, value, b)
        if stage != "train":
            self.log_map_metrics(stage, phi_inv[:b], spacing, batch)
            if stage == "val" and self.want_figure(batch_idx):
                self.remember_figure(
                    registration_figure(
                        source[0], target[0], warped[0].detach(), phi_inv[0].detach(), spacing
                    )
                )
        return loss

    @torch.no_grad()
    def predict(
        self,
        source: Tensor,
        target: Tensor,
        num_steps: int | None = None,
        *,
        spacing: Sequence[float] | None = None,
    ) -> RegistrationResult:
        """Affine registration of ``source`` to ``target`` ``(B, 1, *S)`` (any size).

        Returns ``model="affine"`` with the pull-back ``affine`` matrices, ``phi_inv``, ``phi``
        and ``warped`` on the input grid."""
        start = time.perf_counter()
        self.check_images(source, target)
        shape = tuple(source.shape[2:])
        spacing = self.domain_spacing(shape) if spacing is None else spacing
        spacing = tuple(float(h) for h in spacing)
        was_training = self.training
        self.eval()
        try:
            out = self(source, target, spacing, num_steps)
        finally:
            self.train(was_training)
        phi_inv = affine_to_map(out.matrix, shape, spacing)
        phi = affine_to_map(invert_affine(out.matrix), shape, spacing)
        return RegistrationResult(
            model="affine",
            phi_inv=phi_inv,
            warped=warp_image(source, phi_inv, spacing),
            spacing=spacing,
            phi=phi,
            affine=out.matrix,
            time_s=time.perf_counter() - start,
            extras={"num_steps": self.num_steps if num_steps is None else int(num_steps)},
        )
