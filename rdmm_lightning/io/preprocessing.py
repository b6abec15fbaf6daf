"""The preprocessing record: how training volumes were put on a grid and scaled, replayed at
inference.

A data module (:class:`datamodules.PairDataModule`) builds one :class:`PreprocessingConfig` from
its options and runs its TorchIO steps on every volume, in this order (each step optional):

1. ``ToCanonical`` (RAS+: axis 0 runs left to right);
2. ``Resample(target_spacing)`` (mm);
3. ``Resize(resize_shape)``: the whole field of view resampled to this many voxels;
4. ``RescaleIntensity`` to [0, 1] between the ``intensity_percentiles`` (clipped);
5. ``CropOrPad(crop_or_pad_shape)`` about the centre (pads with 0);
6. ``Clamp(0, 1)``.

(The data module may add a left/right flip after step 1 for volumes of the other side; it needs
the side of each volume and is not part of the record.) The record is stored, as a plain dict
(:meth:`PreprocessingConfig.to_dict`), in every checkpoint the data module takes part in, and
``rdmm infer`` runs the very same steps on a new pair (:meth:`PreprocessingConfig.apply`), so
the network sees images on the grid and in the intensity scale it was trained with.

2D images are TorchIO images ``(1, X, Y, 1)``: they take 2-entry spacings and shapes and keep
the singleton third axis. TorchIO is imported only when the steps run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from .volume import Volume

__all__ = ["PreprocessingConfig"]

_SIZES = ("target_spacing", "resize_shape", "crop_or_pad_shape")
_TUPLES = (*_SIZES, "intensity_percentiles")


def _three(values: Sequence, fill: Any) -> tuple:
    return tuple(values) + (fill,) * (3 - len(values))


@dataclass(frozen=True)
class PreprocessingConfig:
    """Deterministic preprocessing of a data module (see the module docstring).

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
        """Build from a mapping (None: the defaults); unknown keys and bad values raise a
        one-line ValueError naming them."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing option(s) {unknown}; known: {sorted(known)}")
        for name in _TUPLES:
            if options.get(name) is not None:
                try:
                    options[name] = tuple(options[name])
                except TypeError:
                    raise ValueError(
                        f"preprocessing.{name} must be a list of numbers; got {options[name]!r}"
                    ) from None
        config = cls(**options)
        config.validate()
        return config

    @classmethod
    def is_record(cls, value: Any) -> bool:
        """Whether ``value`` is a complete record as :meth:`to_dict` writes it (every field)."""
        return isinstance(value, Mapping) and set(value) == {f.name for f in fields(cls)}

    def validate(self) -> None:
        """Raise a one-line ValueError for sizes that are not 2 or 3 positive numbers, a mix of
        2D and 3D sizes, or percentiles outside ``0 <= low < high <= 100``."""
        dims = set()
        for name in _SIZES:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                bad = len(value) not in (2, 3) or min(float(v) for v in value) <= 0
            except (TypeError, ValueError):
                bad = True
            if bad:
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

    def to_dict(self) -> dict[str, Any]:
        """Plain builtin types (lists, numbers, bools, None): safe in a checkpoint loaded with
        ``weights_only=True``; :meth:`from_mapping` reads it back."""
        return {
            name: None if value is None else (list(value) if name in _TUPLES else bool(value))
            for name, value in ((f.name, getattr(self, f.name)) for f in fields(self))
        }

    def signature(self) -> str:
        """Stable text identifying the preprocessing (part of the data modules' cache key)."""
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def dim(self) -> int | None:
        """2 or 3 when a size fixes the number of spatial dimensions, else None."""
        sizes = [getattr(self, name) for name in _SIZES if getattr(self, name) is not None]
        return len(sizes[0]) if sizes else None

    # ----------------------------------------------------------------------------- TorchIO
    def transforms(self) -> list:
        """The TorchIO steps of the module docstring, those that are set, in order."""
        import torchio as tio

        steps: list = []
        if self.canonical:
            steps.append(tio.ToCanonical())
        if self.target_spacing is not None:
            steps.append(tio.Resample(tuple(float(s) for s in _three(self.target_spacing, 1.0))))
        if self.resize_shape is not None:
            steps.append(tio.Resize(tuple(int(n) for n in _three(self.resize_shape, 1))))
        if self.intensity_percentiles is not None:
            low, high = (float(p) for p in self.intensity_percentiles)
            steps.append(tio.RescaleIntensity(out_min_max=(0.0, 1.0), percentiles=(low, high)))
        if self.crop_or_pad_shape is not None:
            shape = tuple(int(n) for n in _three(self.crop_or_pad_shape, 1))
            steps.append(tio.CropOrPad(shape, padding_mode=0))
        steps.append(tio.Clamp(out_min=0.0, out_max=1.0))
        return steps

    def apply(self, volume: Volume) -> Volume:
        """``volume`` (an image ``(1, *S)``) put through :meth:`transforms`: ``data (1, *S')``
        float32 in [0, 1] and the affine of the new grid; ``path`` and ``file_dtype`` kept.

        Raises:
            ValueError: one line: 2D/3D mismatch with the record's sizes, or a 2D grid that the
                reorientation would turn out of plane.
        """
        import torchio as tio

        dim = volume.dim
        if self.dim is not None and self.dim != dim:
            name = next(n for n in _SIZES if getattr(self, n) is not None)
            raise ValueError(
                f"the training preprocessing has a {self.dim}D {name} "
                f"{list(getattr(self, name))}, but the image is {dim}D {volume.shape}"
            )
        image = tio.ScalarImage(tensor=volume.image.data.float(), affine=volume.affine)
        out = tio.Compose(self.transforms())(image)
        if dim == 2 and out.shape[-1] != 1:
            raise ValueError(
                f"the training preprocessing turns the 2D grid {volume.shape} out of plane "
                f"({tuple(out.spatial_shape)}); check the image's affine"
            )
        out.set_data(out.data.float().contiguous())
        return Volume.from_torchio(out, dim, volume.path, volume.file_dtype)
