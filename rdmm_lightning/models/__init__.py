"""LightningModules of the learned registrations, their schedule callbacks and checkpoint
loading."""

from .affine_module import AffineNetModule
from .base import CHECKPOINT_KEY, RegistrationModuleBase, TrainingDivergedError
from .callbacks import AttributeSchedule, RefinementStepsSchedule, SymmetrySchedule
from .checkpoint import CheckpointError, load_registration_checkpoint, read_checkpoint
from .registration_module import RegistrationNetModule

__all__ = [
    "CHECKPOINT_KEY",
    "AffineNetModule",
    "AttributeSchedule",
    "CheckpointError",
    "RefinementStepsSchedule",
    "RegistrationModuleBase",
    "RegistrationNetModule",
    "SymmetrySchedule",
    "TrainingDivergedError",
    "load_registration_checkpoint",
    "read_checkpoint",
]
