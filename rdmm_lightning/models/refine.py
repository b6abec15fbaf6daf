r"""Test-time instance optimisation: refine the last step's ``m0`` (and RDMM ``h0``) of a network
prediction by minimising the training loss of that pair.

The earlier steps (and the affine stage) are kept fixed: the last step shoots from its frame map
as during inference. RDMM pre-weights are optimised through raw values ``x`` with
``h = exp(x) / sqrt(sum_j exp(2 x_j))`` (``h >= 0``, ``sum h^2 = 1``, no dead units), started at
``x = log h0`` (:mod:`rdmm_lightning.ops.pre_weights`). The best parameters seen (lowest
finite loss) are returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..nets.registration_net import NetOutput, StepOutput
from ..ops.pre_weights import pre_weights_from_raw, raw_from_pre_weights
from ..ops.warp import warp_image
from ..options import RefineOptimizer, values

if TYPE_CHECKING:
    from .registration_module import RegistrationNetModule

__all__ = ["REFINE_OPTIMIZERS", "refine_last_step"]

REFINE_OPTIMIZERS = values(RefineOptimizer)


def _make_optimizer(kind: str, params: list[Tensor], steps: int, lr: float | None):
    if kind == "lbfgs":
        return torch.optim.LBFGS(
            params, lr=1.0 if lr is None else lr, max_iter=steps, line_search_fn="strong_wolfe"
        )
    return torch.optim.Adam(params, lr=1e-3 if lr is None else lr)


def refine_last_step(
    module: RegistrationNetModule,
    source: Tensor,
    target: Tensor,
    spacing: Sequence[float],
    out: NetOutput,
    steps: int,
) -> tuple[NetOutput, list[dict[str, Any]]]:
    """Refine ``out.steps[-1]`` for ``steps`` iterations (L-BFGS: ``steps`` iterations of one
    ``step`` call; Adam: ``steps`` updates). Returns the new output (maps shot with the forward
    map) and the loss history."""
    net, hp = module.net, module.hparams
    last = out.steps[-1]
    shape = tuple(source.shape[2:])
    m = last.m0.detach().clone().requires_grad_(True)
    x = None
    if last.h0 is not None:
        x = raw_from_pre_weights(last.h0.detach()).requires_grad_(True)
    params = [m] + ([x] if x is not None else [])
    frame = None if last.frame_map is None else last.frame_map.detach()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"loss": float("inf"), "m": m.detach().clone(), "x": None}
    if x is not None:
        best["x"] = x.detach().clone()

    def closure() -> Tensor:
        optimizer.zero_grad()
        h = None if x is None else pre_weights_from_raw(x)
        shot = net.shoot(m, h, shape, spacing, initial_map=frame)
        warped = warp_image(source, shot.phi_inv, spacing)
        terms = module.objective(warped, target, [StepOutput(m, h, shot)], out.low_spacing)
        loss = terms["loss"]
        value = float(loss.detach())
        history.append({k: float(v.detach()) for k, v in terms.items()})
        if value < best["loss"]:  # NaN compares False: never stored
            best.update(loss=value, m=m.detach().clone())
            if x is not None:
                best["x"] = x.detach().clone()
        loss.backward()
        return loss

    optimizer = _make_optimizer(hp.refine_optimizer, params, int(steps), hp.refine_lr)
    with torch.enable_grad():
        if hp.refine_optimizer == "lbfgs":
            optimizer.step(closure)
        else:
            for _ in range(int(steps)):
                optimizer.step(closure)
    return _final(module, source, spacing, out, best), history


@torch.no_grad()
def _final(
    module: RegistrationNetModule,
    source: Tensor,
    spacing: Sequence[float],
    out: NetOutput,
    best: dict[str, Any],
) -> NetOutput:
    last = out.steps[-1]
    shape = tuple(source.shape[2:])
    h = None if best["x"] is None else pre_weights_from_raw(best["x"])
    shot = module.net.shoot(
        best["m"], h, shape, spacing, initial_map=last.frame_map,
        initial_forward=last.frame_forward, forward_map=out.phi is not None,
    )  # fmt: skip
    step = StepOutput(best["m"], h, shot, last.frame_map, last.frame_forward)
    warped = warp_image(source, shot.phi_inv, spacing)
    return NetOutput(shot.phi_inv, warped, out.low_spacing, shot.phi, out.steps[:-1] + [step])
