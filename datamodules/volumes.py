"""Reading one volume (and its label map), preprocessed through TorchIO and cached.

Files are read by the package's one reader (:func:`rdmm_lightning.io.read_image` and
:func:`~rdmm_lightning.io.read_label_map`: NIfTI through nibabel, which raises on a truncated
``.nii.gz`` where SimpleITK would fill zeros; NRRD, MetaImage, PNG, TIFF, ... through SimpleITK;
non-finite images and non-integer label maps rejected) into the one volume type,
:class:`~rdmm_lightning.io.Volume`, whose TorchIO images go through the preprocessing and the
augmentation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torchio as tio

from rdmm_lightning.io import Volume, read_image, read_label_map

from .cache import VolumeCache
from .preprocessing import PreprocessingConfig, build_preprocessing

__all__ = ["LabelledVolume", "VolumeLoader", "VolumeReadError"]


class VolumeReadError(OSError):
    """A volume or its label map could not be read or preprocessed."""

    def __init__(self, path: str, cause: BaseException) -> None:
        text = str(cause)
        named = text if text.startswith(path) else f"{path}: {type(cause).__name__}: {text}"
        super().__init__(named)
        self.path = path


class LabelledVolume(NamedTuple):
    """A preprocessed image (``data (1, *S)`` float32 in [0, 1]) and its label map on the same
    grid (``data (1, *S)`` int64), or None."""

    image: Volume
    label: Volume | None


class VolumeLoader:
    """Reads, preprocesses (optionally through the disk cache) and augments single volumes.

    Args:
        config: deterministic preprocessing.
        augmentation: random TorchIO transform applied after preprocessing (and after the cache).
        cache_dir: folder of the on-disk cache of preprocessed volumes, or None.
    """

    def __init__(
        self,
        config: PreprocessingConfig,
        augmentation: tio.Transform | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.pipelines = {False: build_preprocessing(config, flip=False)}
        if config.canonical:
            self.pipelines[True] = build_preprocessing(config, flip=True)
        self.augmentation = augmentation
        self.cache = None if cache_dir is None else VolumeCache(cache_dir, config.signature())

    def load(
        self, path: str, label: str | None = None, flip: bool = False, seed: int | None = None
    ) -> LabelledVolume:
        """One volume; ``seed`` makes the augmentation reproducible. Raises VolumeReadError."""
        try:
            entry = None if self.cache is None else self.cache.get(path, label, flip)
            if entry is None:
                entry = self._preprocess(path, label, flip)
                if self.cache is not None:
                    self.cache.put(path, label, flip, entry)
            if self.augmentation is not None:
                entry = self._augment(entry, seed)
            return _to_volumes(entry)
        except Exception as err:
            where = path if label is None else f"{path} (label {label})"
            raise VolumeReadError(where, err) from err

    def _preprocess(self, path: str, label: str | None, flip: bool) -> dict[str, torch.Tensor]:
        images = {"image": read_image(path).image}
        if label is not None:  # int32: TorchIO's nibabel-based steps refuse int64 data
            labels = read_label_map(label)
            data = labels.image.data.to(torch.int32)
            images["label"] = tio.LabelMap(tensor=data, affine=labels.affine)
        subject = self.pipelines[flip](tio.Subject(images))
        return _entry(subject)

    def _augment(self, entry: dict[str, torch.Tensor], seed: int | None) -> dict[str, torch.Tensor]:
        affine = entry["affine"].numpy()
        images = {"image": tio.ScalarImage(tensor=entry["image"].float(), affine=affine)}
        if "label" in entry:
            images["label"] = tio.LabelMap(tensor=entry["label"].to(torch.int32), affine=affine)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            subject = self.augmentation(tio.Subject(images))
        return _entry(subject)


def _entry(subject: tio.Subject) -> dict[str, torch.Tensor]:
    """The cache entry of a preprocessed subject: ``image`` ``(1, X, Y, Z)`` float32, ``affine``
    ``(4, 4)`` float64 and ``label`` (when loaded)."""
    image = subject["image"]
    entry = {
        "image": image.data.float().contiguous(),
        "affine": torch.as_tensor(np.asarray(image.affine), dtype=torch.float64),
    }
    if "label" in subject:
        label = subject["label"].data
        if label.shape != image.data.shape:
            raise ValueError(
                f"label shape {tuple(label.shape)} differs from image shape "
                f"{tuple(image.data.shape)}"
            )
        entry["label"] = label.contiguous()
    return entry


def _to_volumes(entry: dict[str, torch.Tensor]) -> LabelledVolume:
    """A cache entry as volumes (2D when the third TorchIO axis is a singleton)."""
    affine = entry["affine"].numpy()
    image = tio.ScalarImage(tensor=entry["image"].float().contiguous(), affine=affine)
    dim = 2 if image.shape[-1] == 1 else 3
    label = None
    if "label" in entry:
        data = entry["label"].to(torch.int64).contiguous()
        label = Volume.from_torchio(tio.LabelMap(tensor=data, affine=affine), dim)
    return LabelledVolume(Volume.from_torchio(image, dim), label)
