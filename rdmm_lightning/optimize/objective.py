"""The per-scale objective of the deformable optimisers and the parameters it acts on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..losses.compose import registration_terms, weighted_total
from ..metrics.jacobian import jacobian_determinant
from ..ops.pre_weights import pre_weights_from_raw
from ..ops.warp import warp_image
from ..shooting import ShootingUnit, SolverOptions, make_shooting_unit
from . import preweights as PW
from .multiscale import Scale, upsample_field

__all__ = ["Parameters", "DeformableObjective", "make_unit"]


@dataclass
class Parameters:
    """Momentum ``m: (B, D, *P)`` on a parameter grid and, for RDMM, either raw pre-weights
    ``x: (B, N, *P)`` (optimised mode, see :mod:`rdmm_lightning.ops.pre_weights`) or fixed
    pre-weights ``h_fixed: (B, N, *S)`` on the full grid (predefined mode)."""

    m: Tensor
    x: Tensor | None = None
    h_fixed: Tensor | None = None
    _cache: dict[tuple[int, ...], Tensor] = field(default_factory=dict, repr=False)

    def to_grid(self, shape: Sequence[int]) -> Parameters:
        """Trainable copies upsampled (corners aligned) to the parameter grid ``shape``."""
        m = upsample_field(self.m.detach(), shape).clone().requires_grad_(True)
        x = None
        if self.x is not None:
            x = upsample_field(self.x.detach(), shape).clone().requires_grad_(True)
        return Parameters(m, x, self.h_fixed, self._cache)

    def trainable(self) -> list[Tensor]:
        return [self.m] + ([self.x] if self.x is not None else [])

    def pre_weights(self) -> Tensor | None:
        """``h0: (B, N, *P)`` on the parameter grid (None for vSVF/LDDMM)."""
        if self.x is not None:
            return pre_weights_from_raw(self.x)
        if self.h_fixed is None:
            return None
        shape = tuple(self.m.shape[2:])
        if shape not in self._cache:
            self._cache[shape] = PW.at_grid(self.h_fixed, shape)
        return self._cache[shape]


class DeformableObjective:
    """``loss = sim(source o phi^{-1}, target) + energy_weight * 1/2 <m0, v0>
    [+ omt_weight * OMT(w0)]`` at one scale; calling it returns ``(loss, terms)``. With
    ``count_folds`` the terms also hold ``neg_jacobian``, the number of voxels of the scale's
    image grid where ``det D phi^{-1} <= 0``. With ``fold_penalty > 0`` the loss gets
    ``fold_penalty * mean((fold_margin - det D phi^{-1})_+^2)``, a barrier that is zero unless
    the determinant drops below ``fold_margin``."""

    def __init__(
        self,
        *,
        unit: ShootingUnit,
        source: Tensor,
        target: Tensor,
        mask: Tensor | None,
        initial_map: Tensor | None,
        level: Scale,
        similarity: Callable[[Tensor, Tensor, Tensor | None], Tensor],
        energy_weight: float,
        omt_weight: float,
        params: Parameters,
        count_folds: bool = False,
        fold_penalty: float = 0.0,
        fold_margin: float = 0.1,
    ):
        self.unit = unit
        self.source, self.target, self.mask = source, target, mask
        self.initial_map = initial_map
        self.level = level
        self.similarity = similarity
        self.energy_weight = float(energy_weight)
        self.omt_weight = float(omt_weight)
        self.params = params
        self.count_folds = bool(count_folds)
        self.fold_penalty = float(fold_penalty)
        self.fold_margin = float(fold_margin)

    def __call__(self) -> tuple[Tensor, dict[str, float]]:
        lv, m0 = self.level, self.params.m
        h0 = self.params.pre_weights()
        res = self.unit(
            m0,
            h0,
            spacing=lv.param_spacing,
            full_shape=lv.shape,
            full_spacing=lv.spacing,
            initial_map=self.initial_map,
        )
        warped = warp_image(self.source, res.phi_inv, lv.spacing)
        parts = registration_terms(
            self.similarity(warped, self.target, self.mask),
            [(m0, res.velocity0)],
            lv.param_spacing,
            weights0=[res.weights0] if self.omt_weight > 0 and res.weights0 is not None else None,
            sigmas=self.unit.smoother.sigmas,
        )
        weights = {"similarity": 1.0, "energy": self.energy_weight, "omt": self.omt_weight}
        loss = weighted_total(parts, weights)
        terms = {name: float(value.detach()) for name, value in parts.items()}
        det = None
        if self.fold_penalty > 0:
            det = jacobian_determinant(res.phi_inv, lv.spacing)
            barrier = (self.fold_margin - det).clamp_min(0).pow(2).mean()
            loss = loss + self.fold_penalty * barrier
            terms["fold_barrier"] = float(barrier.detach())
        if self.count_folds:
            with torch.no_grad():
                if det is None:
                    det = jacobian_determinant(res.phi_inv.detach(), lv.spacing)
                terms["neg_jacobian"] = float((det.detach() <= 0).sum())
        return loss, terms


def make_unit(
    model: str,
    sigmas: tuple[float, ...],
    kernel_weights: Sequence[float] | None,
    weight_sigma: float,
    solver: SolverOptions,
    forward_map: bool = False,
) -> ShootingUnit:
    """The model's shooting unit: RDMM with ``weight_sigma``, vSVF/LDDMM with the multi-Gaussian
    ``kernel_weights``."""
    if model == "rdmm":
        return make_shooting_unit(
            model, sigmas=sigmas, weight_sigma=weight_sigma, solver=solver, forward_map=forward_map
        )
    return make_shooting_unit(
        model, sigmas=sigmas, weights=kernel_weights, solver=solver, forward_map=forward_map
    )
