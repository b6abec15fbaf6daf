"""nn.Module shells around the shooting functions: smoothers and shooting units.

They hold the configuration (kernel widths, solver, low-resolution factor) and call the pure
functions; they have no learnable parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..grid import Grid
from ..ops.grid import domain_spacing
from ..ops.smoothing import (
    fourier_gaussian_kernels,
    local_sigma,
    multi_gaussian_smooth,
    smooth_pre_weights,
)
from ..options import Model, values
from .lddmm import shoot_lddmm
from .lowres import upsample_and_compose
from .rdmm import H_MODES, shoot_rdmm
from .result import ShootingResult
from .solver import SolverOptions
from .terms import region_specific_velocity
from .vsvf import shoot_vsvf

__all__ = [
    "MultiGaussianSmoother",
    "RegionSpecificSmoother",
    "ShootingUnit",
    "MultiGaussianShooting",
    "VSVFShooting",
    "LDDMMShooting",
    "RDMMShooting",
    "make_shooting_unit",
    "MODELS",
]

MODELS = values(Model.deformable())


def _check_sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be a non-empty list of positive numbers; got {sigmas}")
    return sigmas


def _normalised_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0 / n,) * n
    weights = tuple(float(w) for w in weights)
    if len(weights) != n or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"weights must be {n} non-negative numbers with a positive sum; got {weights}"
        )
    total = sum(weights)
    return tuple(w / total for w in weights)


class MultiGaussianSmoother(nn.Module):
    """``v = K * m`` with ``K = sum_i c_i G_{sigma_i}``, ``sum_i c_i = 1`` (weights are
    normalised). ``forward(m: (B, D, *S), spacing=None) -> (B, D, *S)``."""

    def __init__(self, sigmas: Sequence[float], weights: Sequence[float] | None = None):
        super().__init__()
        self.sigmas = _check_sigmas(sigmas)
        self.weights = _normalised_weights(weights, len(self.sigmas))

    def forward(self, m: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        spacing = domain_spacing(m.shape[2:]) if spacing is None else spacing
        return multi_gaussian_smooth(m, self.sigmas, self.weights, spacing)

    def extra_repr(self) -> str:
        return f"sigmas={self.sigmas}, weights={self.weights}"


class RegionSpecificSmoother(nn.Module):
    """``v = sum_i w_i K_{sigma_i} * (w_i m)`` with ``w = S h`` (normalised pre-weight smoothing
    with std ``weight_sigma``). ``forward(m, h, spacing=None) -> (v, nu)``."""

    def __init__(self, sigmas: Sequence[float], weight_sigma: float = 0.05):
        super().__init__()
        self.sigmas = _check_sigmas(sigmas)
        self.weight_sigma = float(weight_sigma)

    def weights(self, h: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        spacing = domain_spacing(h.shape[2:]) if spacing is None else spacing
        return smooth_pre_weights(h, self.weight_sigma, spacing)

    def local_sigma(self, h: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        """``sigma(x) = sqrt(sum_i w_i^2 sigma_i^2)``, ``(B, 1, *S)`` in domain units."""
        return local_sigma(self.weights(h, spacing), self.sigmas)

    def forward(
        self, m: Tensor, h: Tensor, spacing: Sequence[float] | None = None
    ) -> tuple[Tensor, Tensor]:
        spacing = domain_spacing(m.shape[2:]) if spacing is None else spacing
        kernels = fourier_gaussian_kernels(
            m.shape[2:], self.sigmas, spacing, dtype=m.dtype, device=m.device
        )
        return region_specific_velocity(m, self.weights(h, spacing), kernels)

    def extra_repr(self) -> str:
        return f"sigmas={self.sigmas}, weight_sigma={self.weight_sigma}"


class ShootingUnit(nn.Module):
    """Base shell: shoots on the grid of ``m0`` and optionally upsamples to ``full_shape`` and
    composes with an initial map (see :func:`upsample_and_compose`)."""

    model: str = ""
    uses_pre_weights: bool = False

    def __init__(self, solver: SolverOptions | None = None, forward_map: bool = False):
        super().__init__()
        self.solver = solver or SolverOptions()
        self.forward_map = forward_map

    def shoot(
        self, m0: Tensor, h0: Tensor | None, spacing: Sequence[float], times: Tensor | None
    ) -> ShootingResult:
        raise NotImplementedError

    def forward(
        self,
        m0: Tensor,
        h0: Tensor | None = None,
        *,
        spacing: Sequence[float] | None = None,
        full_shape: Sequence[int] | None = None,
        full_spacing: Sequence[float] | None = None,
        initial_map: Tensor | None = None,
        initial_forward: Tensor | None = None,
        times: Tensor | None = None,
    ) -> ShootingResult:
        """Shoot from ``m0: (B, D, *S)`` (and ``h0: (B, N, *S)`` for RDMM).

        With ``full_shape`` (or an initial map) the result's ``phi_inv``/``phi`` are the full-
        resolution composed maps; the low-resolution quantities stay in the other fields.
        ``spacing`` is the domain spacing of ``m0``'s grid (parity if omitted); ``full_spacing``
        defaults to the same domain at ``full_shape``.
        """
        shape = tuple(m0.shape[2:])
        spacing = domain_spacing(shape) if spacing is None else tuple(spacing)
        if self.uses_pre_weights and h0 is None:
            raise ValueError(f"{self.model} shooting needs pre-weights h0 of shape (B, N, *S)")
        result = self.shoot(m0, h0, spacing, times)
        if full_shape is None and initial_map is not None:
            full_shape = tuple(initial_map.shape[2:])
        if full_shape is not None:
            full_shape = tuple(int(n) for n in full_shape)
            if full_spacing is None:
                full_grid = Grid.from_domain_spacing(shape, spacing).resize(full_shape)
                full_spacing = full_grid.domain_spacing
            result.phi_inv, result.phi = upsample_and_compose(
                result.phi_inv,
                full_shape,
                spacing,
                full_spacing,
                phi=result.phi,
                initial_map=initial_map,
                initial_forward=initial_forward,
            )
        return result


class MultiGaussianShooting(ShootingUnit):
    """vSVF or LDDMM with a multi-Gaussian K: the two differ only in the shooting function,
    ``shoot_fn(m0, sigmas, weights, spacing, solver, forward_map=, times=)`` (set by the
    subclasses :class:`VSVFShooting` and :class:`LDDMMShooting`)."""

    shoot_fn: Callable[..., ShootingResult]  # a staticmethod in the subclasses

    def __init__(
        self,
        sigmas: Sequence[float],
        weights: Sequence[float] | None = None,
        solver: SolverOptions | None = None,
        forward_map: bool = False,
    ):
        super().__init__(solver, forward_map)
        self.smoother = MultiGaussianSmoother(sigmas, weights)

    def shoot(self, m0, h0, spacing, times):
        return self.shoot_fn(
            m0,
            self.smoother.sigmas,
            self.smoother.weights,
            spacing,
            self.solver,
            forward_map=self.forward_map,
            times=times,
        )


class VSVFShooting(MultiGaussianShooting):
    """vSVF: stationary ``v = K * m0`` (multi-Gaussian K)."""

    model = Model.SVF.value
    shoot_fn = staticmethod(shoot_vsvf)


class LDDMMShooting(MultiGaussianShooting):
    """LDDMM (EPDiff) with a multi-Gaussian K."""

    model = Model.LDDMM.value
    shoot_fn = staticmethod(shoot_lddmm)


class RDMMShooting(ShootingUnit):
    """RDMM with the region-specific smoother and advected pre-weights."""

    model = Model.RDMM.value
    uses_pre_weights = True

    def __init__(
        self,
        sigmas: Sequence[float],
        weight_sigma: float = 0.05,
        solver: SolverOptions | None = None,
        forward_map: bool = False,
        h_mode: str = "pde",
    ):
        super().__init__(solver, forward_map)
        if h_mode not in H_MODES:
            raise ValueError(f"h_mode must be one of {H_MODES}; got {h_mode!r}")
        self.smoother = RegionSpecificSmoother(sigmas, weight_sigma)
        self.h_mode = h_mode

    @property
    def num_kernels(self) -> int:
        return len(self.smoother.sigmas)

    def shoot(self, m0, h0, spacing, times):
        return shoot_rdmm(
            m0,
            h0,
            self.smoother.sigmas,
            self.smoother.weight_sigma,
            spacing,
            self.solver,
            forward_map=self.forward_map,
            h_mode=self.h_mode,
            times=times,
        )


def make_shooting_unit(model: str, **kwargs) -> ShootingUnit:
    """Build a shooting unit by name: ``"svf"``, ``"lddmm"`` or ``"rdmm"``."""
    classes = {Model.SVF: VSVFShooting, Model.LDDMM: LDDMMShooting, Model.RDMM: RDMMShooting}
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    return classes[model](**kwargs)
