"""Every named option of rdmm-lightning, as string enums (the one home of the option names).

Each member *is* the string users type (``Model.RDMM == "rdmm"``, ``str(Model.RDMM) == "rdmm"``,
``Model("rdmm") is Model.RDMM``), so configs, CLI arguments and checkpoint hyperparameters keep
plain strings: code validates and compares against the enum, and stores ``.value``.
:func:`values` gives the tuple of strings for argparse ``choices`` and error messages,
:func:`either` the quoted ``'a' or 'b'`` form.

This module imports nothing from the package, so every layer may import it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = [
    "StrOption",
    "values",
    "either",
    "Model",
    "Similarity",
    "Regularizer",
    "SpacingMode",
    "IntensityNormalization",
    "HMode",
    "SolverMethod",
    "RefineOptimizer",
    "AffineInit",
    "NetInput",
    "PreWeightActivation",
    "NetworkPrecision",
    "InferencePrecision",
    "LocalKernel",
    "Coordinates",
    "Side",
    "AffineStage",
    "Preset",
]


class StrOption(str, enum.Enum):
    """A string option: members compare, hash and format as their value (``enum.StrEnum``
    exists only from Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def values(options: type[StrOption] | Iterable[StrOption]) -> tuple[str, ...]:
    """The option strings of an enum class (declaration order) or of some of its members."""
    return tuple(str(option.value) for option in options)


def either(options: type[StrOption] | Iterable[StrOption]) -> str:
    """The option strings quoted for a message: ``'box' or 'gaussian'``, ``'a', 'b' or 'c'``."""
    quoted = [repr(v) for v in values(options)]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class Model(StrOption):
    """Registration model: ``affine`` alone, or a deformable model after the affine stage."""

    AFFINE = "affine"
    SVF = "svf"
    LDDMM = "lddmm"
    RDMM = "rdmm"

    @classmethod
    def deformable(cls) -> tuple[Model, ...]:
        """The deformable (shooting) models: svf, lddmm, rdmm."""
        return tuple(m for m in cls if m is not cls.AFFINE)

    @property
    def is_deformable(self) -> bool:
        """True for svf, lddmm and rdmm."""
        return self is not Model.AFFINE


class Similarity(StrOption):
    """Image similarity (:func:`rdmm_lightning.losses.similarity_from_name`)."""

    SSD = "ssd"
    NCC = "ncc"
    LNCC = "lncc"
    MK_LNCC = "mk-lncc"
    MI = "mi"


class Regularizer(StrOption):
    """RDMM pre-weights: optimised with the momentum, or predefined from a region mask."""

    OPTIMIZED = "optimized"
    PREDEFINED = "predefined"


class SpacingMode(StrOption):
    """Domain spacing of a grid: ``parity`` (each axis spans [0, 1]) or ``physical`` (largest
    physical extent spans [0, 1], voxel aspect ratios kept)."""

    PARITY = "parity"
    PHYSICAL = "physical"


class IntensityNormalization(StrOption):
    """Intensity rescaling of an input image to [0, 1]."""

    PERCENTILE = "percentile"
    MINMAX = "minmax"
    NONE = "none"


class HMode(StrOption):
    """RDMM pre-weights over time: advected by their transport equation, or interpolated."""

    PDE = "pde"
    INTERPOLATE = "interpolate"


class SolverMethod(StrOption):
    """ODE integrator of the shooting equations."""

    RK4 = "rk4"
    EULER = "euler"
    MIDPOINT = "midpoint"
    DOPRI5 = "dopri5"

    @classmethod
    def fixed_step(cls) -> tuple[SolverMethod, ...]:
        """Methods with a fixed number of steps per unit time: rk4, euler, midpoint."""
        return tuple(m for m in cls if m is not cls.DOPRI5)

    @classmethod
    def adaptive(cls) -> tuple[SolverMethod, ...]:
        """Methods with adaptive steps (``rtol``/``atol``): dopri5."""
        return (cls.DOPRI5,)


class RefineOptimizer(StrOption):
    """Optimiser of test-time instance refinement."""

    LBFGS = "lbfgs"
    ADAM = "adam"


class AffineInit(StrOption):
    """Start of an affine registration: identity, or the centre-of-mass translation."""

    IDENTITY = "identity"
    COM = "com"


class NetInput(StrOption):
    """Resolution of the images a registration network sees: full, or the shooting grid's."""

    FULL = "full"
    LOW = "low"


class PreWeightActivation(StrOption):
    """Activation that keeps the RDMM pre-weight network's outputs non-negative."""

    SOFTPLUS = "softplus"
    RELU = "relu"


class NetworkPrecision(StrOption):
    """Compute precision of the convolutional networks (the shooting always runs in the inputs'
    dtype): float32, or bfloat16 mixed precision (autocast; weights and outputs stay float32),
    several times faster where the hardware has bfloat16 matrix units (recent GPUs, CPUs with
    AMX) and slower where it has not."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class InferencePrecision(StrOption):
    """Network precision of a loaded checkpoint: ``auto`` keeps the trained
    :class:`NetworkPrecision` except bfloat16 on a device without native bfloat16 arithmetic
    (CPUs without AVX512-BF16/AMX, GPUs before Ampere), which runs in float32 instead (there
    bfloat16 is emulated, 10-20x slower); ``float32`` or ``bfloat16`` force one."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class LocalKernel(StrOption):
    """Window of local (LNCC) sums."""

    BOX = "box"
    GAUSSIAN = "gaussian"


class Coordinates(StrOption):
    """Physical point convention: ``lps`` (ITK) or ``ras`` (nibabel)."""

    LPS = "lps"
    RAS = "ras"


class AffineStage(StrOption):
    """Affine stage of ``rdmm infer``/``rdmm evaluate --checkpoint`` before the deformable
    network: the checkpoint's affine net, affine-opt on the pair, or none."""

    NET = "net"
    OPT = "opt"
    NONE = "none"


class Side(StrOption):
    """Knee side of the synthetic 3D data."""

    LEFT = "left"
    RIGHT = "right"


class Preset(StrOption):
    """Named option sets of ``rdmm register`` (``rdmm_lightning/presets/<name>.yaml``)."""

    BRAIN = "brain"
    LUNG = "lung"
    KNEE = "knee"
    SYNTHETIC = "synthetic"
