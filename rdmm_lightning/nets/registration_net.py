r"""The deformable registration network (vSVF-, LDDMM- or RDMM-net) as a plain ``nn.Module``.

Iterative refinement with K steps; step k (maps on the full grid ``S``, shooting on the
low-resolution grid ``S_low``):

1. ``moving = source o phi_k`` (``phi_0`` = the initial map, e.g. affine, or the identity);
2. ``m0 = MomentumNet(moving, target)`` and, for RDMM, ``h0 = PreWeightNet(moving, target)``,
   both on ``S_low``;
3. shoot from the identity at low resolution -> ``psi_k^{-1}``, upsample its displacement and
   compose: ``phi_{k+1} = phi_k o psi_k^{-1}`` (:class:`~rdmm_lightning.shooting.ShootingUnit`
   with ``initial_map``); with ``forward_map`` the forward maps compose as
   ``psi_k o phi_k^{-1}``.

The original source is warped once, by the final map. ``m0``/``h0`` of step k live in the frame
of that step's moving image (the source itself for the first step without an initial map).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from ..grid import Grid
from ..ops.resample import resample_image
from ..ops.smoothing import local_sigma, smooth_pre_weights
from ..ops.warp import sample_field, warp_image
from ..options import NetInput, either, values
from ..shooting import MODELS, ShootingResult, ShootingUnit, SolverOptions, make_shooting_unit
from .heads import MomentumNet, PreWeightNet

__all__ = ["RegistrationNet", "NetOutput", "StepOutput"]


@dataclass
class StepOutput:
    """One refinement step: parameters on the low grid and the shooting result.

    ``frame_map`` is the pull-back composed *before* this step (None: identity) and
    ``frame_forward`` its forward map (source grid -> frame of the step's moving image), None for
    the identity or when not computed.
    """

    m0: Tensor
    h0: Tensor | None
    shot: ShootingResult
    frame_map: Tensor | None = None
    frame_forward: Tensor | None = None


@dataclass
class NetOutput:
    """Result of :meth:`RegistrationNet.forward` on the full grid.

    Attributes:
        phi_inv: total pull-back ``(B, D, *S)`` (includes the initial map).
        warped: ``source o phi_inv`` ``(B, 1, *S)``.
        phi: total forward map or None (only with ``forward_map=True``).
        low_spacing: domain spacing of the shooting grid.
        steps: per-step parameters and shooting results.
    """

    phi_inv: Tensor
    warped: Tensor
    low_spacing: tuple[float, ...]
    phi: Tensor | None = None
    steps: list[StepOutput] = field(default_factory=list)


class RegistrationNet(nn.Module):
    """Momentum (and pre-weight) UNets + a shooting unit, iterated K times.

    Args:
        model: ``"svf"``, ``"lddmm"`` or ``"rdmm"``.
        dim: 2 or 3.
        sigmas: Gaussian stds (domain units) of the smoother.
        kernel_weights: svf/lddmm multi-Gaussian weights (normalised; default uniform).
        weight_sigma: RDMM pre-weight smoothing std.
        prior_h2: RDMM initial squared pre-weights of the untrained pre-weight net.
        features: UNet channels per level (both nets).
        lowres_factor: shooting grid = ``max(8, round(n * factor))`` per axis.
        solver: integration options (default rk4, 10 steps).
        net_input: ``"full"`` (nets see full-resolution images, outputs resized to the shooting
            grid) or ``"low"`` (images are first resampled to the shooting grid; cheaper).
        momentum_clamp: optional bound on ``|m0|``.
        pre_weight_activation: ``"softplus"`` or ``"relu"``.
        image_force: the momentum net also sees the image force and adds a learnt multiple of
            it (:class:`~rdmm_lightning.nets.heads.MomentumNet`).
        network_precision: compute precision of both UNets (``"float32"`` or ``"bfloat16"``
            mixed precision; :class:`~rdmm_lightning.options.NetworkPrecision`); the shooting
            runs in the inputs' dtype either way.
    """

    def __init__(
        self,
        model: str,
        dim: int,
        sigmas: Sequence[float],
        kernel_weights: Sequence[float] | None = None,
        weight_sigma: float = 0.05,
        prior_h2: Sequence[float] | None = None,
        features: Sequence[int] = (16, 32, 32, 64),
        lowres_factor: float = 0.5,
        solver: SolverOptions | None = None,
        net_input: str = "full",
        momentum_clamp: float | None = None,
        pre_weight_activation: str = "softplus",
        image_force: bool = False,
        network_precision: str = "float32",
    ):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {model!r}")
        if net_input not in values(NetInput):
            raise ValueError(f"net_input must be {either(NetInput)}; got {net_input!r}")
        if not 0 < lowres_factor <= 1:
            raise ValueError(f"lowres_factor must be in (0, 1]; got {lowres_factor}")
        self.model, self.dim = model, dim
        self.lowres_factor, self.net_input = float(lowres_factor), net_input
        self.sigmas = tuple(float(s) for s in sigmas)
        solver = solver or SolverOptions()
        kwargs: dict = {"sigmas": self.sigmas, "solver": solver}
        if model == "rdmm":
            kwargs["weight_sigma"] = weight_sigma
        else:
            kwargs["weights"] = kernel_weights
        self.unit: ShootingUnit = make_shooting_unit(model, **kwargs)
        self.unit_forward: ShootingUnit = make_shooting_unit(model, forward_map=True, **kwargs)
        self.momentum_net = MomentumNet(
            dim, features, clamp=momentum_clamp, image_force=image_force,
            precision=network_precision,
        )  # fmt: skip
        self.pre_weight_net = None
        self.prior_h2: tuple[float, ...] | None = None
        if model == "rdmm":
            h2 = [1.0] * len(self.sigmas) if prior_h2 is None else [float(v) for v in prior_h2]
            self.prior_h2 = tuple(v / sum(h2) for v in h2) if sum(h2) > 0 else tuple(h2)
            self.pre_weight_net = PreWeightNet(
                dim, len(self.sigmas), prior_h2, features, pre_weight_activation,
                precision=network_precision,
            )  # fmt: skip

    def set_solver_compile(self, compile: bool) -> None:
        """Shoot with the right-hand side through ``torch.compile`` or not
        (``SolverOptions.compile``), e.g. at inference of a network trained without it."""
        for unit in (self.unit, self.unit_forward):
            unit.solver = replace(unit.solver, compile=bool(compile))

    def grids(
        self, shape: Sequence[int], spacing: Sequence[float]
    ) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """Shooting grid shape and domain spacing for a full grid ``shape``/``spacing``."""
        low = Grid.from_domain_spacing(shape, spacing).low_res(self.lowres_factor)
        return low.shape, low.domain_spacing

    def predict_parameters(
        self,
        moving: Tensor,
        target: Tensor,
        low_shape: Sequence[int],
        spacing: Sequence[float] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``m0: (B, D, *S_low)`` and RDMM ``h0: (B, N, *S_low)`` (else None) from
        ``moving, target: (B, 1, *S)``; ``spacing``: domain spacing of ``S`` (needed by the
        image force)."""
        net_spacing = spacing
        if self.net_input == "low":
            if spacing is not None:
                grid = Grid.from_domain_spacing(tuple(moving.shape[2:]), spacing)
                net_spacing = grid.resize(low_shape).domain_spacing
            moving, target = resample_image(moving, low_shape), resample_image(target, low_shape)
        m0 = self.momentum_net(moving, target, low_shape, net_spacing)
        h0 = None if self.pre_weight_net is None else self.pre_weight_net(moving, target, low_shape)
        return m0, h0

    def shoot(
        self,
        m0: Tensor,
        h0: Tensor | None,
        shape: Sequence[int],
        spacing: Sequence[float],
        *,
        initial_map: Tensor | None = None,
        initial_forward: Tensor | None = None,
        forward_map: bool = False,
    ) -> ShootingResult:
        """Shoot ``m0`` on its grid and bring the map to the full grid composed with
        ``initial_map`` (and the forward map with ``initial_forward``)."""
        low_spacing = Grid.from_domain_spacing(shape, spacing).resize(m0.shape[2:]).domain_spacing
        unit = self.unit_forward if forward_map else self.unit
        return unit(
            m0,
            h0,
            spacing=low_spacing,
            full_shape=shape,
            full_spacing=spacing,
            initial_map=initial_map,
            initial_forward=initial_forward,
        )

    def forward(
        self,
        source: Tensor,
        target: Tensor,
        spacing: Sequence[float],
        *,
        num_steps: int = 1,
        initial_map: Tensor | None = None,
        initial_forward: Tensor | None = None,
        forward_map: bool = False,
    ) -> NetOutput:
        """Register ``source`` to ``target`` (``(B, 1, *S)``, [0, 1]) in ``num_steps`` steps.

        A step whose shot diverges (a non-finite map even within the solver's Courant limit)
        ends the loop: its map is the output, so the loss is not finite and training skips
        the update (see ``on_before_optimizer_step``) instead of failing on the next step.

        With ``forward_map`` and an ``initial_map``, pass its inverse as ``initial_forward``.
        """
        shape = tuple(source.shape[2:])
        spacing = tuple(float(h) for h in spacing)
        low_shape, low_spacing = self.grids(shape, spacing)
        phi_inv, phi = initial_map, initial_forward
        steps: list[StepOutput] = []
        for _ in range(int(num_steps)):
            moving = source if phi_inv is None else warp_image(source, phi_inv, spacing)
            m0, h0 = self.predict_parameters(moving, target, low_shape, spacing)
            shot = self.shoot(
                m0, h0, shape, spacing, initial_map=phi_inv, initial_forward=phi,
                forward_map=forward_map,
            )  # fmt: skip
            steps.append(StepOutput(m0, h0, shot, phi_inv, phi if forward_map else None))
            phi_inv, phi = shot.phi_inv, shot.phi
            if len(steps) < num_steps and not bool(torch.isfinite(phi_inv).all()):
                break  # a diverged shot: its non-finite map is the output (no NaN net inputs)
        if phi_inv is None:
            raise ValueError("num_steps must be >= 1")
        warped = warp_image(source, phi_inv, spacing)
        return NetOutput(phi_inv, warped, low_spacing, phi if forward_map else None, steps)

    def sigma_maps(
        self,
        step: StepOutput,
        shape: Sequence[int],
        spacing: Sequence[float],
        low_spacing: Sequence[float],
    ) -> tuple[Tensor, Tensor]:
        """RDMM ``sigma(x)`` at t = 0 (source grid, via the step's frame map when known) and
        t = 1 (target grid), ``(B, 1, *S)`` each, from one step's shooting."""
        if step.shot.weights0 is None or step.shot.pre_weights is None:
            raise ValueError(f"sigma maps need RDMM shooting; model is {self.model!r}")
        ws = self.unit.smoother.weight_sigma
        sigma0 = resample_image(local_sigma(step.shot.weights0, self.sigmas), shape, False)
        if step.frame_forward is not None:
            sigma0 = sample_field(sigma0, step.frame_forward, spacing, padding_mode="border")
        w1 = smooth_pre_weights(step.shot.pre_weights, ws, low_spacing)
        sigma1 = resample_image(local_sigma(w1, self.sigmas), shape, False)
        return sigma0, sigma1
