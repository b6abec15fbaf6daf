"""TorchIO preprocessing and augmentation built from plain config values.

Deterministic preprocessing, in this order (each step optional):

1. ``ToCanonical`` (RAS+: axis 0 runs left to right, so a left/right flip is ``Flip(axes=0)``);
2. ``Flip(axes=0)`` for volumes whose side differs from ``flip_to_side`` (needs canonical);
3. ``Resample(target_spacing)`` (mm);
4. ``Resize(resize_shape)``: the whole field of view resampled to this many voxels;
5. ``RescaleIntensity`` to [0, 1] between the given intensity percentiles (clipped);
6. ``CropOrPad(crop_or_pad_shape)`` about the centre (pads with 0);
7. ``Clamp(0, 1)``.

Label maps follow the same spatial steps with nearest-neighbour interpolation (TorchIO's
``LabelMap`` rule); intensity steps leave them alone. 2D images (TorchIO shape ``(1, X, Y, 1)``)
take 2-entry spacings and shapes; the singleton third axis is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torchio as tio

from rdmm_lightning.io.training_grid import TrainingGrid

__all__ = ["PreprocessingConfig", "build_preprocessing", "build_augmentation", "parse_side"]


@dataclass(frozen=True)
class PreprocessingConfig:
    """Options of the deterministic preprocessing (see the module docstring).

    Attributes:
        canonical: reorient to RAS+ first.
        target_spacing: output spacing in mm (2 or 3 entries), or None.
        resize_shape: output shape of ``Resize`` (2 or 3 entries), or None.
        crop_or_pad_shape: output shape of ``CropOrPad`` (2 or 3 entries), or None.
        intensity_percentiles: ``(low, high)`` percentiles mapped to 0 and 1, or None (no
            rescaling; images should then already lie in [0, 1]).
    """

    canonical: bool = True
    target_spacing: tuple[float, ...] | None = None
    resize_shape: tuple[int, ...] | None = None
    crop_or_pad_shape: tuple[int, ...] | None = None
    intensity_percentiles: tuple[float, float] | None = (0.5, 99.5)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> PreprocessingConfig:
        """Build from a mapping; unknown keys and bad values raise ValueError naming them."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing option(s) {unknown}; known: {sorted(known)}")
        for name in (
            "target_spacing",
            "resize_shape",
            "crop_or_pad_shape",
            "intensity_percentiles",
        ):
            if options.get(name) is not None:
                options[name] = tuple(options[name])
        config = cls(**options)
        config.validate()
        return config

    def validate(self) -> None:
        dims = set()
        for name in ("target_spacing", "resize_shape", "crop_or_pad_shape"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) not in (2, 3) or min(value) <= 0:
                raise ValueError(f"preprocessing.{name} needs 2 or 3 positive entries; got {value}")
            dims.add(len(value))
        if len(dims) > 1:
            raise ValueError(
                "preprocessing target_spacing/resize_shape/crop_or_pad_shape must "
                "all have 2 entries (2D) or all 3 (3D)"
            )
        p = self.intensity_percentiles
        if p is not None and (len(p) != 2 or not 0 <= p[0] < p[1] <= 100):
            raise ValueError(
                f"preprocessing.intensity_percentiles must be (low, high) with "
                f"0 <= low < high <= 100; got {p}"
            )

    def training_grid(self) -> TrainingGrid:
        """The spatial part of these options (what ``rdmm infer`` replays)."""
        return TrainingGrid(
            canonical=self.canonical,
            target_spacing=self.target_spacing,
            resize_shape=self.resize_shape,
            crop_or_pad_shape=self.crop_or_pad_shape,
        )

    def signature(self) -> str:
        """Stable text identifying the preprocessing (used as part of the cache key)."""
        return json.dumps(asdict(self), sort_keys=True)


def build_preprocessing(config: PreprocessingConfig, flip: bool = False) -> tio.Compose:
    """The deterministic TorchIO pipeline; ``flip`` adds the left/right flip.

    The spatial steps come from :class:`~rdmm_lightning.io.training_grid.TrainingGrid`, which
    ``rdmm infer`` uses to put new images on the same grid.
    """
    grid = config.training_grid()
    steps: list[tio.Transform] = grid.resampling_transforms()
    if flip:
        if not config.canonical:
            raise ValueError("flipping to a common side needs preprocessing.canonical=true")
        steps.insert(1, tio.Flip(axes=(0,)))  # right after ToCanonical
    if config.intensity_percentiles is not None:
        low, high = (float(p) for p in config.intensity_percentiles)
        steps.append(tio.RescaleIntensity(out_min_max=(0.0, 1.0), percentiles=(low, high)))
    steps += grid.crop_or_pad_transforms()
    steps.append(tio.Clamp(out_min=0.0, out_max=1.0))
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
