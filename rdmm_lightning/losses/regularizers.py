r"""Regularisation terms: shooting energy, OMT penalty on the RDMM weights, symmetry losses.

All return the mean over the batch (``reduction="mean"``) or one value per batch item ``(B,)``
(``reduction="none"``). Spacings are domain spacings (:mod:`rdmm_lightning.ops.grid`); parity
spacing of the input's grid when omitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.energy import momentum_energy, voxel_volume
from ..ops.grid import check_map, domain_spacing, identity_map
from ..ops.warp import compose_maps
from ._checks import reduce

__all__ = [
    "shooting_energy",
    "omt_penalty",
    "weight_range_penalty",
    "affine_symmetry_loss",
    "map_symmetry_loss",
]


def _spacing(x: Tensor, spacing: Sequence[float] | None) -> tuple[float, ...]:
    shape = tuple(x.shape[2:])
    if spacing is None:
        return domain_spacing(shape)
    spacing = tuple(float(h) for h in spacing)
    if len(spacing) != len(shape):
        raise ValueError(f"spacing must have {len(shape)} entries; got {spacing}")
    return spacing


def shooting_energy(
    m0: Tensor, v0: Tensor, spacing: Sequence[float] | None = None, reduction: str = "mean"
) -> Tensor:
    r"""``1/2 <m0, v0>`` integrated over the domain (voxel volume ``prod h_d``).

    ``m0, v0: (B, D, *S)``; ``spacing``: the grid of ``m0`` (the low-resolution grid when shooting
    at low resolution). The reference uses no ``1/2`` and a positive-part clamp per component
    (reference-notes.md §3.2); the regularisation weight is applied by the caller.
    """
    check_map(m0, "m0")
    if v0.shape != m0.shape:
        raise ValueError(f"v0 must have the shape of m0 {tuple(m0.shape)}; got {tuple(v0.shape)}")
    return reduce(0.5 * momentum_energy(m0, v0, _spacing(m0, spacing)), reduction)


def omt_penalty(
    w: Tensor,
    sigmas: Sequence[float] | Tensor,
    power: float = 1.0,
    spacing: Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""OMT penalty on the RDMM weights ``w: (B, N, *S)`` of the Gaussians with stds ``sigmas``:
    ``|log(s_max/s_min)|^{-p} sum_i w_i^2 |log(s_max/s_i)|^p`` integrated over the domain
    (voxel volume ``prod h_d``), ``p = power``.

    Cheap where the weight sits on the largest Gaussian. The order of ``sigmas`` is free (it must
    match the channels of ``w``); 0 when ``N = 1`` or all sigmas are equal.
    """
    if w.dim() not in (4, 5):
        raise ValueError(
            f"w must have shape (B, N, *S) with 2 or 3 spatial dims; got {tuple(w.shape)}"
        )
    sig = torch.as_tensor(sigmas, dtype=w.dtype, device=w.device).flatten()
    if sig.numel() != w.shape[1]:
        raise ValueError(
            f"sigmas must have N = {w.shape[1]} entries (w: {tuple(w.shape)}); got {sig.numel()}"
        )
    if not bool((sig > 0).all()):
        raise ValueError(f"sigmas must be positive; got {sig.tolist()}")
    if not power > 0:
        raise ValueError(f"power must be > 0; got {power}")
    spacing = _spacing(w, spacing)
    if w.shape[1] == 1:
        return reduce(w.new_zeros(w.shape[0]), reduction)
    log_ratio = (sig.max() / sig).log()  # |log(s_max / s_i)| >= 0
    span = log_ratio.max()
    # all sigmas equal: span = 0 and every coefficient is 0
    coeff = (log_ratio / span.clamp_min(torch.finfo(w.dtype).tiny)) ** power
    mass = (w * w).flatten(2).sum(dim=2)  # (B, N)
    return reduce((mass * coeff).sum(dim=1) * voxel_volume(spacing), reduction)


def weight_range_penalty(
    w: Tensor,
    prior_h2: Sequence[float] | Tensor,
    spacing: Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Weight-range penalty ``sum_i |w_i - sqrt(g_i)|^2`` integrated over the domain (voxel volume
    ``prod h_d``): pulls the RDMM weights ``w: (B, N, *S)`` towards the global prior with squared
    weights ``g = prior_h2`` (``N`` entries, normalised to sum 1), so that they leave it only where
    the similarity gains from it (reference-notes.md §3.2, weight-range loss). 0 at the prior."""
    if w.dim() not in (4, 5):
        raise ValueError(
            f"w must have shape (B, N, *S) with 2 or 3 spatial dims; got {tuple(w.shape)}"
        )
    g = torch.as_tensor(prior_h2, dtype=w.dtype, device=w.device).flatten()
    if g.numel() != w.shape[1] or not bool((g >= 0).all()) or float(g.sum()) <= 0:
        raise ValueError(
            f"prior_h2 must have N = {w.shape[1]} non-negative entries with a positive sum; "
            f"got {g.tolist()}"
        )
    target = (g / g.sum()).sqrt().view(1, -1, *([1] * (w.dim() - 2)))
    vol = voxel_volume(_spacing(w, spacing))
    return reduce((w - target).pow(2).flatten(1).sum(dim=1) * vol, reduction)


def affine_symmetry_loss(
    A_st: Tensor, b_st: Tensor, A_ts: Tensor, b_ts: Tensor, reduction: str = "mean"
) -> Tensor:
    r"""``|A_st A_ts - I|_F^2 + |A_st b_ts + b_st|^2`` for affine maps ``x -> A x + b``
    (``A: (B, D, D)``, ``b: (B, D)``); 0 when the two maps are inverse to each other."""
    for name, a in (("A_st", A_st), ("A_ts", A_ts)):
        if a.dim() != 3 or a.shape[1] != a.shape[2]:
            raise ValueError(f"{name} must have shape (B, D, D); got {tuple(a.shape)}")
    batch, dim = A_st.shape[:2]
    for name, x, shape in (
        ("A_ts", A_ts, (batch, dim, dim)),
        ("b_st", b_st, (batch, dim)),
        ("b_ts", b_ts, (batch, dim)),
    ):
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}; got {tuple(x.shape)}")
    eye = torch.eye(dim, dtype=A_st.dtype, device=A_st.device)
    lin = ((A_st @ A_ts - eye) ** 2).sum(dim=(1, 2))
    trans = ((A_st @ b_ts.unsqueeze(-1)).squeeze(-1) + b_st).pow(2).sum(dim=1)
    return reduce(lin + trans, reduction)


def map_symmetry_loss(
    phi_st_inv: Tensor,
    phi_ts_inv: Tensor,
    spacing: Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Mean over voxels of ``||phi_st^{-1} o phi_ts^{-1} - id||^2`` (squared norm over the
    ``D`` components, domain units) for pull-back maps ``(B, D, *S)`` on the same grid.

    Composition by :func:`rdmm_lightning.ops.warp.compose_maps` (border padding of the
    displacement). The reference averages over components too, i.e. ``1/D`` times this.
    """
    check_map(phi_st_inv, "phi_st_inv")
    check_map(phi_ts_inv, "phi_ts_inv", phi_st_inv.shape[2:])
    if phi_ts_inv.shape != phi_st_inv.shape:
        raise ValueError(
            f"phi_ts_inv must have the shape of phi_st_inv {tuple(phi_st_inv.shape)}; "
            f"got {tuple(phi_ts_inv.shape)}"
        )
    spacing = _spacing(phi_st_inv, spacing)
    comp = compose_maps(phi_st_inv, phi_ts_inv, spacing)
    ident = identity_map(comp.shape[2:], spacing, dtype=comp.dtype, device=comp.device)
    return reduce((comp - ident).pow(2).sum(dim=1).flatten(1).mean(dim=1), reduction)
