"""Pairwise numerical optimisation: affine-opt and svf/lddmm/rdmm-opt, multi-scale L-BFGS.

* :func:`optimize_affine` — affine pull-back map (centre-of-mass initialisation).
* :func:`optimize_deformable` — vSVF, LDDMM or RDMM (optimised or predefined regularizer).
* :func:`register_tensors` — affine then deformable in one call.

All return a :class:`rdmm_lightning.result.RegistrationResult` on the working grid.
"""

from .affine import center_of_mass, optimize_affine
from .deformable import REGULARIZERS, optimize_deformable
from .lbfgs import LbfgsOptions
from .progress import Deadline, ProgressLine, StopOptimization
from .register import REGISTRATION_MODELS, register_tensors

__all__ = [
    "optimize_affine",
    "optimize_deformable",
    "register_tensors",
    "center_of_mass",
    "LbfgsOptions",
    "Deadline",
    "ProgressLine",
    "StopOptimization",
    "REGULARIZERS",
    "REGISTRATION_MODELS",
]
