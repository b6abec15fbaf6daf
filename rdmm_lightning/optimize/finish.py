"""The last step of the deformable optimisers: one shoot of the kept parameters on the full grid,
one warp of the original source, RDMM sigma maps, and a fallback for non-finite maps."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from ..ops.grid import identity_map
from ..ops.resample import resample_image
from ..ops.smoothing import local_sigma, smooth_pre_weights
from ..ops.warp import sample_field, warp_image
from ..result import RegistrationResult
from ..shooting import ShootingResult, ShootingUnit, SolverOptions
from .multiscale import Scale
from .objective import Parameters, make_unit

__all__ = ["finish", "sigma_maps"]


def sigma_maps(
    unit: ShootingUnit,
    result: ShootingResult,
    h_src: Tensor | None,
    initial_forward: Tensor | None,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    param_spacing: tuple[float, ...],
) -> tuple[Tensor, Tensor]:
    """``sigma(x)`` at t = 0 (source side) and t = 1 (target side), ``(B, 1, *S)`` each."""
    sigmas, ws = unit.smoother.sigmas, unit.smoother.weight_sigma
    if h_src is not None:  # predefined: exact, from the user's source-grid pre-weights
        sigma0 = local_sigma(smooth_pre_weights(h_src, ws, spacing), sigmas)
    else:
        sigma0 = resample_image(local_sigma(result.weights0, sigmas), shape, antialias=False)
        if initial_forward is not None:  # shooting frame -> source grid
            sigma0 = sample_field(sigma0, initial_forward, spacing, padding_mode="border")
    w1 = smooth_pre_weights(result.pre_weights, ws, param_spacing)
    sigma1 = resample_image(local_sigma(w1, sigmas), shape, antialias=False)
    return sigma0, sigma1


def finish(
    model: str,
    params: Parameters,
    level: Scale,
    source: Tensor,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    initial_map: Tensor | None,
    initial_forward: Tensor | None,
    h_src: Tensor | None,
    solver: SolverOptions,
    sigmas: tuple[float, ...],
    kernel_weights: tuple[float, ...] | None,
    weight_sigma: float,
    started: float,
    stopped: str | None,
    history: list[dict[str, Any]],
    unchanged: bool = False,
) -> RegistrationResult:
    """Final shoot (with the solver of the last scale run, so the map is the one evaluated
    there) with the forward map, full-grid maps, one warp of the original source; ``time_s``
    counts from ``started`` (a ``time.perf_counter()`` value). ``unchanged``: no iteration ran,
    the parameters are the starting point, so the maps are the initial ones (no shoot, no
    sigma maps)."""
    final_unit = make_unit(model, sigmas, kernel_weights, weight_sigma, solver, forward_map=True)
    with torch.no_grad():
        m0 = params.m.detach()
        h0 = params.pre_weights()
        h0 = None if h0 is None else h0.detach()
    sigma_t0 = sigma_t1 = None
    with torch.no_grad():
        if unchanged:
            phi_inv, phi = _fallback_maps(source, shape, spacing, initial_map, initial_forward)
        else:
            res = final_unit(
                m0,
                h0,
                spacing=level.param_spacing,
                full_shape=shape,
                full_spacing=spacing,
                initial_map=initial_map,
                initial_forward=initial_forward,
            )
            phi_inv, phi = res.phi_inv, res.phi
            if initial_map is not None and initial_forward is None:
                phi = None
            if not bool(torch.isfinite(phi_inv).all()) or (
                phi is not None and not bool(torch.isfinite(phi).all())
            ):
                note = f"final {model} shooting gave non-finite maps; returned the initial map"
                stopped = f"{stopped}; {note}" if stopped else note
                phi_inv, phi = _fallback_maps(source, shape, spacing, initial_map, initial_forward)
                res = None
            if model == "rdmm" and res is not None:
                sigma_t0, sigma_t1 = sigma_maps(
                    final_unit, res, h_src, initial_forward, shape, spacing, level.param_spacing
                )
        warped = warp_image(source, phi_inv, spacing)
    return RegistrationResult(
        model=model,
        phi_inv=phi_inv,
        warped=warped,
        spacing=spacing,
        phi=phi,
        sigma_t0=sigma_t0,
        sigma_t1=sigma_t1,
        time_s=time.perf_counter() - started,
        stopped=stopped,
        history=history,
        extras={"m0": m0, "h0": h0, "param_spacing": level.param_spacing},
    )


def _fallback_maps(
    source: Tensor,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    initial_map: Tensor | None,
    initial_forward: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    ident = identity_map(shape, spacing, dtype=source.dtype, device=source.device)
    ident = ident.expand(source.shape[0], *ident.shape[1:]).clone()
    if initial_map is None:
        return ident, ident.clone()
    return initial_map.clone(), None if initial_forward is None else initial_forward.clone()
