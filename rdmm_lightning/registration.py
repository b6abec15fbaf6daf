"""The result of one registration on a working grid, shared by the optimisers, the networks and the
file pipeline.

Every method (affine-opt, svf/lddmm/rdmm-opt, the -net models) returns a
:class:`RegistrationResult` on the *working grid*: the grid both images were resampled to before
registration (see :mod:`rdmm_lightning.ops.grid` for the coordinate convention). The file pipeline
(:mod:`rdmm_lightning.pipeline`) turns it into the files of architecture.md on the source's and
target's own grids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["RegistrationResult"]


@dataclass
class RegistrationResult:
    """Maps and derived fields of one registration, batch first, on the working grid.

    Attributes:
        model: ``"affine"``, ``"svf"``, ``"lddmm"`` or ``"rdmm"``.
        phi_inv: pull-back map ``phi^{-1}: (B, D, *S)`` in domain coordinates (target -> source);
            includes the affine part.
        phi: forward map ``phi: (B, D, *S)`` (source -> target), or None when the method cannot
            provide it.
        warped: source warped into the target grid, ``(B, C, *S)``.
        spacing: domain spacing of the working grid.
        affine: the affine pull-back map as ``(B, D, D + 1)`` matrices ``[A | b]`` acting on
            domain coordinates (``phi_inv(x) = A x + b``), or None.
        sigma_t0: RDMM local regularizer std at t = 0 on the source side ``(B, 1, *S)``.
        sigma_t1: RDMM local regularizer std at t = 1 (advected) on the target side ``(B, 1, *S)``.
        time_s: wall time of the registration in seconds.
        stopped: None when the method finished normally, else a one-line reason (non-finite loss,
            time limit) — the maps are then the last good ones.
        history: loss terms per iteration or epoch (free-form, JSON-serialisable).
        extras: anything else a method wants to expose (e.g. initial momentum ``m0``).
    """

    model: str
    phi_inv: Tensor
    warped: Tensor
    spacing: tuple[float, ...]
    phi: Tensor | None = None
    affine: Tensor | None = None
    sigma_t0: Tensor | None = None
    sigma_t1: Tensor | None = None
    time_s: float = 0.0
    stopped: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    def cpu(self) -> RegistrationResult:
        """Move every tensor (maps, images, ``extras`` values) to the CPU, detached; returns self
        (the output writers work on the CPU)."""
        for name in ("phi_inv", "phi", "warped", "affine", "sigma_t0", "sigma_t1"):
            value = getattr(self, name)
            if isinstance(value, Tensor):
                setattr(self, name, value.detach().cpu())
        self.extras = {
            k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in self.extras.items()
        }
        return self
