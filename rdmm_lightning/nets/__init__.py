"""Plain ``nn.Module`` networks: UNet, momentum and pre-weight heads, the multi-step affine net and
the iterated deformable registration net (no Lightning here)."""

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
    "crop_to",
    "pad_to_multiple",
    "pair_input",
]
