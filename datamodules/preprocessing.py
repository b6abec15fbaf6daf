"""TorchIO preprocessing and augmentation built from plain config values.

The deterministic steps (reorientation, resampling, intensity rescaling, crop/pad, clamp) are
those of the preprocessing record :class:`~rdmm_lightning.io.preprocessing.PreprocessingConfig`
(re-exported here), which checkpoints store and ``rdmm infer`` replays. The data module adds one
step of its own: ``Flip(axes=0)`` right after ``ToCanonical`` for volumes whose side differs from
``flip_to_side`` (RAS+: axis 0 runs left to right).

Label maps follow the same spatial steps with nearest-neighbour interpolation (TorchIO's
``LabelMap`` rule); intensity steps leave them alone. 2D images (TorchIO shape ``(1, X, Y, 1)``)
take 2-entry spacings and shapes; the singleton third axis is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torchio as tio

from rdmm_lightning.io.preprocessing import PreprocessingConfig

__all__ = ["PreprocessingConfig", "build_preprocessing", "build_augmentation", "parse_side"]


def build_preprocessing(config: PreprocessingConfig, flip: bool = False) -> tio.Compose:
    """The record's TorchIO steps (:meth:`PreprocessingConfig.transforms`); ``flip`` adds the
    left/right flip right after ``ToCanonical``."""
    steps: list[tio.Transform] = config.transforms()
    if flip:
        if not config.canonical:
            raise ValueError("flipping to a common side needs preprocessing.canonical=true")
        steps.insert(1, tio.Flip(axes=(0,)))  # right after ToCanonical
    return tio.Compose(steps)


def build_augmentation(spec: Mapping[str, Mapping[str, Any] | None] | None) -> tio.Compose | None:
    """Random TorchIO transforms from ``{"RandomAffine": {"degrees": 5}, ...}`` (in order).

    Only ``tio.Random*`` classes are allowed; a ``Clamp(0, 1)`` follows so images stay in [0, 1].
    """
    if not spec:
        return None
    steps: list[tio.Transform] = []
    for name, kwargs in spec.items():
        cls = getattr(tio, str(name), None)
        if not str(name).startswith("Random") or not isinstance(cls, type):
            raise ValueError(
                f"unknown augmentation {name!r}: use a torchio Random* transform "
                "such as RandomAffine, RandomFlip, RandomGamma, RandomNoise"
            )
        try:
            steps.append(cls(**dict(kwargs or {})))
        except (TypeError, ValueError) as err:
            raise ValueError(f"augmentation {name}: {err}") from err
    steps.append(tio.Clamp(out_min=0.0, out_max=1.0))
    return tio.Compose(steps)


def parse_side(value: str) -> str:
    """``"left"`` or ``"right"`` from values such as ``L``, ``Left``, ``RIGHT``."""
    text = str(value).strip().lower()
    if text in ("l", "left"):
        return "left"
    if text in ("r", "right"):
        return "right"
    raise ValueError(f"side values must be left/right (or L/R); got {value!r}")
