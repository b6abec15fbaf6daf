"""Preprocessing from config: shapes, spacing, [0, 1] range, flips, augmentation."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch

from datamodules.preprocessing import PreprocessingConfig, build_augmentation
from datamodules.volumes import VolumeLoader

from .helpers import write_volume


def _load(path, label=None, flip=False, **options):
    return VolumeLoader(PreprocessingConfig.from_mapping(options)).load(str(path), label, flip)


def _data(vol):
    """The loaded image, label map (or None) and voxel size (mm)."""
    label = None if vol.label is None else vol.label.data
    return vol.image.data, label, vol.image.voxel_size_mm


def test_resize_crop_pad_and_range(tmp_path):
    img = write_volume(tmp_path / "a.nii.gz", (16, 20, 12), spacing=(2.0, 1.0, 1.5))
    lab = write_volume(tmp_path / "a_l.nii.gz", (16, 20, 12), spacing=(2.0, 1.0, 1.5), label=True)
    image, label, mm = _data(_load(img, str(lab), resize_shape=[8, 10, 6]))
    assert image.shape == (1, 8, 10, 6) and image.dtype == torch.float32
    assert label.shape == (1, 8, 10, 6) and label.dtype == torch.int64
    assert image.min() >= 0 and image.max() <= 1 and image.max() > 0.9
    assert set(label.unique().tolist()) <= {0, 1, 2}
    assert mm == pytest.approx((4.0, 2.0, 3.0))
    vol = _load(img, str(lab), target_spacing=[1.0, 1.0, 1.0], crop_or_pad_shape=[24, 16, 16])
    image, label, mm = _data(vol)
    assert image.shape == label.shape == (1, 24, 16, 16)
    assert mm == pytest.approx((1.0, 1.0, 1.0))
    assert image.min() >= 0 and image.max() <= 1


def test_percentile_normalisation_clips_outliers(tmp_path):
    data = np.linspace(0, 100, 16**3, dtype=np.float32).reshape(16, 16, 16)
    data[0, 0, 0] = 1e6
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "o.nii.gz"))
    image = _load(tmp_path / "o.nii.gz", intensity_percentiles=[1, 99]).image.data
    assert float(image.max()) == 1.0 and float(image.min()) == 0.0
    assert 0.4 < float(image.median()) < 0.6  # not squashed by the outlier


def test_2d_images_give_2d_tensors(tmp_path):
    data = np.random.default_rng(0).random((32, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0])), str(tmp_path / "s.nii.gz"))
    vol = _load(tmp_path / "s.nii.gz", target_spacing=[1.0, 1.0], crop_or_pad_shape=[16, 16])
    image, _, mm = _data(vol)
    assert vol.image.dim == 2 and image.shape == (1, 16, 16) and mm == pytest.approx((1.0, 1.0))


def test_canonical_and_flip_to_common_side(tmp_path):
    plain = write_volume(tmp_path / "p.nii.gz", (12, 12, 12), seed=3)
    mirrored = write_volume(tmp_path / "m.nii.gz", (12, 12, 12), seed=3, flip_x=True)
    a, b = _load(plain).image.data, _load(mirrored).image.data
    assert torch.equal(a, b.flip(1))  # LAS storage reoriented to RAS
    assert torch.equal(_load(plain, flip=True).image.data, a.flip(1))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="resize_shap"):
        PreprocessingConfig.from_mapping({"resize_shap": [8, 8, 8]})
    with pytest.raises(ValueError, match="all have 2 entries"):
        PreprocessingConfig.from_mapping({"resize_shape": [8, 8], "crop_or_pad_shape": [8, 8, 8]})
    with pytest.raises(ValueError, match="RandomWarp"):
        build_augmentation({"RandomWarp": {}})
    with pytest.raises(ValueError, match="Resample"):
        build_augmentation({"Resample": {}})


def test_augmentation_is_seeded_and_kept_in_range(tmp_path):
    img = write_volume(tmp_path / "a.nii.gz", (16, 16, 16))
    aug = build_augmentation({"RandomAffine": {"degrees": 10}, "RandomGamma": {}})
    loader = VolumeLoader(PreprocessingConfig(), aug)
    one, two = (loader.load(str(img), seed=4).image.data for _ in range(2))
    assert torch.equal(one, two)
    assert not torch.equal(one, loader.load(str(img), seed=5).image.data)
    assert one.min() >= 0 and one.max() <= 1


def test_disk_cache_roundtrip(tmp_path, monkeypatch):
    img = write_volume(tmp_path / "a.nii.gz", (16, 16, 16))
    lab = write_volume(tmp_path / "l.nii.gz", (16, 16, 16), label=True)
    loader = VolumeLoader(
        PreprocessingConfig(resize_shape=(8, 8, 8)), cache_dir=str(tmp_path / "c")
    )
    first = _data(loader.load(str(img), str(lab)))
    assert len(list((tmp_path / "c").rglob("*.pt"))) == 1

    def no_read(path):
        raise AssertionError("a cache hit must not read the file")

    monkeypatch.setattr("datamodules.volumes.read_image", no_read)
    again = _data(loader.load(str(img), str(lab)))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert again[1].dtype == torch.int64 and again[2] == first[2]
    write_volume(img, (16, 16, 16), seed=9)  # changed file: new key, read again
    mtime = os.stat(img).st_mtime_ns + 10**9
    os.utime(img, ns=(mtime, mtime))
    with pytest.raises(OSError, match="cache hit"):
        loader.load(str(img), str(lab))
