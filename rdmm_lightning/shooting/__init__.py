"""Shooting units (vSVF, LDDMM, RDMM): the engine's fixed-step integrator; dopri5 and the
adjoint method through torchdiffeq."""

from ..ops.energy import momentum_energy
from .lddmm import EPDiffDynamics, shoot_lddmm
from .rdmm import RDMMDynamics, shoot_rdmm
from .result import NonFiniteInputError, ShootingResult
from .solver import SolverOptions, integrate
from .units import (
    MODELS,
    LDDMMShooting,
    MultiGaussianShooting,
    MultiGaussianSmoother,
    RDMMShooting,
    RegionSpecificSmoother,
    ShootingUnit,
    VSVFShooting,
    make_shooting_unit,
)
from .vsvf import integrate_velocity, shoot_vsvf

__all__ = [
    "NonFiniteInputError",
    "MODELS",
    "LDDMMShooting",
    "MultiGaussianShooting",
    "MultiGaussianSmoother",
    "RDMMShooting",
    "RegionSpecificSmoother",
    "ShootingUnit",
    "VSVFShooting",
    "make_shooting_unit",
    "EPDiffDynamics",
    "RDMMDynamics",
    "ShootingResult",
    "SolverOptions",
    "integrate",
    "integrate_velocity",
    "momentum_energy",
    "shoot_lddmm",
    "shoot_rdmm",
    "shoot_vsvf",
]
