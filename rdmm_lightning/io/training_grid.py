"""The grid a network saw during training, rebuilt for a new target image.

A network checkpoint is trained on volumes that the data module's TorchIO preprocessing put on a
grid: reoriented to RAS+ (``ToCanonical``), resampled to a spacing (``Resample``), the field of
view resampled to a shape (``Resize``) and cropped or padded about the centre (``CropOrPad``).
At inference the target must be seen on the same kind of grid, otherwise the network receives
images in another orientation or scale than it learnt (e.g. IXI volumes are stored PSR, the
training volumes are RAS). :class:`TrainingGrid` holds those spatial options and
:meth:`TrainingGrid.apply` returns the grid (shape, affine) the training preprocessing gives for
a target grid. It runs the very TorchIO transforms of the data module on an empty image of the
target's shape and affine, so the two cannot drift apart.

Only the spatial steps matter here: intensities are normalised by the inference pipeline
(:func:`rdmm_lightning.pipeline.normalize_intensities`), and a left/right flip to a common side
(a data-module option that needs the side of each volume) is not replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["TrainingGrid"]


def _tuple(value: Any, name: str, cast: type) -> tuple | None:
    if value is None:
        return None
    try:
        out = tuple(cast(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"preprocessing.{name} must be a list of numbers; got {value!r}") from None
    if len(out) not in (2, 3) or min(out) <= 0:
        raise ValueError(f"preprocessing.{name} needs 2 or 3 positive entries; got {value!r}")
    return out


def _three(values: Sequence, fill: Any) -> tuple:
    return tuple(values) + (fill,) * (3 - len(values))


@dataclass(frozen=True)
class TrainingGrid:
    """Spatial preprocessing of a training run (see the module docstring).

    Attributes:
        canonical: reorient to RAS+ first.
        target_spacing: output spacing in mm (2 or 3 entries), or None.
        resize_shape: the field of view resampled to this shape, or None.
        crop_or_pad_shape: cropped or zero-padded about the centre to this shape, or None.
    """

    canonical: bool = False
    target_spacing: tuple[float, ...] | None = None
    resize_shape: tuple[int, ...] | None = None
    crop_or_pad_shape: tuple[int, ...] | None = None

    @classmethod
    def from_preprocessing(cls, options: Mapping[str, Any] | None) -> TrainingGrid | None:
        """From a data module's ``preprocessing`` mapping (other keys are ignored); None for
        None. ``canonical`` defaults to True, as in the data module."""
        if options is None:
            return None
        if not isinstance(options, Mapping):
            raise ValueError(f"preprocessing must be a mapping; got {type(options).__name__}")
        return cls(
            canonical=bool(options.get("canonical", True)),
            target_spacing=_tuple(options.get("target_spacing"), "target_spacing", float),
            resize_shape=_tuple(options.get("resize_shape"), "resize_shape", int),
            crop_or_pad_shape=_tuple(options.get("crop_or_pad_shape"), "crop_or_pad_shape", int),
        )

    @classmethod
    def from_training_config(cls, config: Mapping[str, Any] | None) -> TrainingGrid | None:
        """From a resolved training config (``config["data"]["preprocessing"]``), or None when
        the config is missing or its data module has no preprocessing."""
        if not isinstance(config, Mapping):
            return None
        data = config.get("data")
        if not isinstance(data, Mapping):
            return None
        return cls.from_preprocessing(data.get("preprocessing"))

    def resampling_transforms(self) -> list:
        """TorchIO ``ToCanonical``, ``Resample`` and ``Resize``, those that are set, in order."""
        import torchio as tio

        steps = []
        if self.canonical:
            steps.append(tio.ToCanonical())
        if self.target_spacing is not None:
            steps.append(tio.Resample(tuple(float(s) for s in _three(self.target_spacing, 1.0))))
        if self.resize_shape is not None:
            steps.append(tio.Resize(tuple(int(n) for n in _three(self.resize_shape, 1))))
        return steps

    def crop_or_pad_transforms(self) -> list:
        """TorchIO ``CropOrPad`` about the centre (zero padding), if set. The data module runs it
        after the intensity rescaling, so the padding stays 0."""
        import torchio as tio

        if self.crop_or_pad_shape is None:
            return []
        shape = tuple(int(n) for n in _three(self.crop_or_pad_shape, 1))
        return [tio.CropOrPad(shape, padding_mode=0)]

    def transforms(self) -> list:
        """All spatial TorchIO transforms, in the data module's order."""
        return self.resampling_transforms() + self.crop_or_pad_transforms()

    def apply(self, shape: Sequence[int], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
        """Shape and ``(4, 4)`` affine (voxel index -> RAS mm) of the preprocessed grid.

        Args:
            shape: the target's spatial shape (2 or 3 sizes).
            affine: the target's ``(4, 4)`` affine.

        Raises:
            ValueError: 2D/3D mismatch with the options, or a 2D grid that the reorientation
                would turn out of plane.
        """
        import torchio as tio

        shape = tuple(int(n) for n in shape)
        dim = len(shape)
        for name in ("target_spacing", "resize_shape", "crop_or_pad_shape"):
            value = getattr(self, name)
            if value is not None and len(value) != dim:
                raise ValueError(
                    f"the training preprocessing has a {len(value)}D {name} {list(value)}, "
                    f"but the image is {dim}D {shape}"
                )
        steps = self.transforms()
        if not steps:
            return shape, np.asarray(affine, dtype=np.float64)
        image = tio.ScalarImage(
            tensor=torch.zeros((1, *_three(shape, 1)), dtype=torch.float32),
            affine=np.asarray(affine, dtype=np.float64),
        )
        out = tio.Compose(steps)(image)
        out_shape = tuple(int(n) for n in out.spatial_shape)
        if dim == 2:
            if out_shape[2] != 1:
                raise ValueError(
                    f"the training preprocessing turns the 2D grid {shape} out of plane "
                    f"({out_shape}); check the image's affine"
                )
            out_shape = out_shape[:2]
        return out_shape, np.asarray(out.affine, dtype=np.float64)
