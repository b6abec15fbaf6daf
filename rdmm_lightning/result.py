"""The result of one registration on a working grid, shared by the optimisers, the networks and the
file pipeline.

Every method (affine-opt, svf/lddmm/rdmm-opt, the -net models) returns a
:class:`RegistrationResult` on the *working grid*: the grid both images were resampled to before
registration (see :mod:`rdmm_lightning.ops.grid` for the coordinate convention). The file pipeline
(:mod:`rdmm_lightning.pipeline`) turns it into the output files (docs/architecture.md) on the
source's and target's own grids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

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

    def __repr__(self) -> str:
        """One line: model, batch and working-grid shape, domain spacing, time, stop reason and
        a summary of ``extras["metrics"]`` (never whole tensors)."""
        shape = tuple(self.phi_inv.shape)
        spacing = ", ".join(f"{h:.4g}" for h in self.spacing)
        parts = [
            f"model={self.model!r}",
            f"batch={shape[0]}",
            f"shape={shape[2:]}",
            f"spacing=({spacing})",
            f"time_s={self.time_s:.3g}",
        ]
        if self.stopped is not None:
            parts.append(f"stopped={self.stopped!r}")
        parts += _metrics_summary(self.extras.get("metrics"))
        return f"RegistrationResult({', '.join(parts)})"

    def to_sitk(self) -> sitk.CompositeTransform:
        """The registration as one ``sitk.CompositeTransform`` in physical (LPS) mm: the affine
        part after the residual displacement on the target grid, as written to
        ``composite.h5``; ``sitk.Resample(source, target, result.to_sitk())`` resamples the
        source image like ``warped.nii.gz``.

        Raises:
            ValueError: the result has no physical space (a batch, or a method called on bare
                tensors: register one pair with :func:`rdmm_lightning.register` or
                :func:`rdmm_lightning.infer`).
        """
        outputs = self.extras.get("outputs")
        if outputs is None:
            raise ValueError(
                "to_sitk() needs a result in physical space: register one pair with "
                "rdmm_lightning.register or rdmm_lightning.infer (this result has no "
                "extras['outputs'])"
            )
        return outputs.to_sitk()

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


def _metrics_summary(metrics: dict[str, Any] | None) -> list[str]:
    """``key=value`` strings of the headline metrics (mean Dice, det J <= 0 voxels); per-item
    lists of a batch are shown as lists."""
    if not metrics:
        return []
    out = []
    dice = metrics.get("dice")
    mean = dice.get("mean") if isinstance(dice, dict) else None
    if mean is not None:
        out.append(f"dice={_short(mean)}")
    folds = metrics.get("negative_jacobian_voxels")
    if folds is not None:
        out.append(f"negative_jacobian_voxels={_short(folds)}")
    return out


def _short(value: Any) -> str:
    """A number to 4 digits; a list of up to 4 items in full, a longer one as its mean."""
    if isinstance(value, (list, tuple)):
        numbers = [float(v) for v in value if v is not None]
        if len(value) > 4:
            mean = sum(numbers) / len(numbers) if numbers else None
            return f"mean {_short(mean)} of {len(value)}"
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
