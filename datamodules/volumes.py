"""Reading one volume (and its label map) through TorchIO, checked and preprocessed.

NIfTI files are read with nibabel rather than TorchIO's default SimpleITK reader: SimpleITK
silently fills a truncated ``.nii.gz`` with zeros, nibabel raises. Images with non-finite values
are rejected too. Other formats (NRRD, MHA, ...) use TorchIO's reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from torchio.data.io import read_image

from .cache import VolumeCache
from .preprocessing import PreprocessingConfig, build_preprocessing

__all__ = ["Volume", "VolumeLoader", "VolumeReadError", "read_image_checked", "read_label_checked"]


class VolumeReadError(OSError):
    """A volume or its label map could not be read or preprocessed."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"{path}: {type(cause).__name__}: {cause}")
        self.path = path


@dataclass(frozen=True)
class Volume:
    """A preprocessed volume: ``image`` ``(1, *S)`` float32 in [0, 1], ``label`` ``(1, *S)``
    int64 or None, ``spacing`` (mm, ``len(S)`` entries)."""

    image: torch.Tensor
    label: torch.Tensor | None
    spacing: tuple[float, ...]


def _channels_first(data: np.ndarray, path: str) -> np.ndarray:
    if data.ndim == 2:
        data = data[..., None, None]
    elif data.ndim == 3:
        data = data[..., None]
    elif data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[3] != 1:
        raise ValueError(f"{path}: expected a single-channel 2D or 3D image; got {data.shape}")
    return data.transpose(3, 0, 1, 2)


def _read(path: str, label: bool) -> tuple[torch.Tensor, np.ndarray]:
    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        tensor, affine = read_image(path)
        return (tensor.round().to(torch.int32) if label else tensor.float()), affine
    img = nib.load(str(path), mmap=False)
    if label:
        data = np.asanyarray(img.dataobj)
        data = np.rint(data) if data.dtype.kind == "f" else data
        data = data.astype(np.int32)
    else:
        data = img.get_fdata(dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(_channels_first(data, path))), img.affine


def read_image_checked(path: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader for intensity images: float32 ``(1, X, Y, Z)``; raises on any defect."""
    try:
        tensor, affine = _read(str(path), label=False)
    except Exception as err:
        raise OSError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{path}: image has non-finite values")
    return tensor, affine


def read_label_checked(path: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader for label maps: int32 ``(1, X, Y, Z)``; raises on any defect."""
    try:
        return _read(str(path), label=True)
    except Exception as err:
        raise OSError(f"cannot read {path}: {type(err).__name__}: {err}") from err


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
    ) -> Volume:
        """One volume; ``seed`` makes the augmentation reproducible. Raises VolumeReadError."""
        try:
            entry = None if self.cache is None else self.cache.get(path, label, flip)
            if entry is None:
                entry = self._preprocess(path, label, flip)
                if self.cache is not None:
                    self.cache.put(path, label, flip, entry)
            if self.augmentation is not None:
                entry = self._augment(entry, seed)
            return _to_volume(entry)
        except Exception as err:
            where = path if label is None else f"{path} (label {label})"
            raise VolumeReadError(where, err) from err

    def _preprocess(self, path: str, label: str | None, flip: bool) -> dict[str, torch.Tensor]:
        images = {"image": tio.ScalarImage(path, reader=read_image_checked)}
        if label is not None:
            images["label"] = tio.LabelMap(label, reader=read_label_checked)
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


def _to_volume(entry: dict[str, torch.Tensor]) -> Volume:
    image = entry["image"]
    label = entry.get("label")
    dim = 2 if image.shape[-1] == 1 else 3
    if dim == 2:
        image = image[..., 0]
        label = None if label is None else label[..., 0]
    spacing = torch.linalg.vector_norm(entry["affine"][:3, :3], dim=0)[:dim]
    return Volume(
        image.float().contiguous(),
        None if label is None else label.to(torch.int64).contiguous(),
        tuple(float(s) for s in spacing),
    )
