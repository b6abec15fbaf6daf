"""Plain ``nn.Module`` networks: UNet, momentum and pre-weight heads, the multi-step affine net and
the iterated deformable registration net (no Lightning here)."""

from .affine import (
    affine_deviation,
    affine_to_map,
    compose_affine,
    domain_centre,
    identity_affine,
    invert_affine,
    matrix_from_params,
    params_from_matrix,
)
from .affine_net import AffineOutput, MultiStepAffineNet
from .heads import MomentumNet, PreWeightNet, pair_input
from .registration_net import NetOutput, RegistrationNet, StepOutput
from .unet import UNet, crop_to, pad_to_multiple

__all__ = [
    "AffineOutput",
    "MomentumNet",
    "MultiStepAffineNet",
    "NetOutput",
    "PreWeightNet",
    "RegistrationNet",
    "StepOutput",
    "UNet",
    "affine_deviation",
    "affine_to_map",
    "compose_affine",
    "crop_to",
    "domain_centre",
    "identity_affine",
    "invert_affine",
    "matrix_from_params",
    "pad_to_multiple",
    "pair_input",
    "params_from_matrix",
]
