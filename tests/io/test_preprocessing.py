"""PreprocessingConfig: the data module's preprocessing record, replayed on new images."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio

from datamodules.preprocessing import build_preprocessing
from rdmm_lightning.io import Volume
from rdmm_lightning.io.preprocessing import PreprocessingConfig

# IXI-like storage: voxel axes point P, S, R (not RAS), 2 mm
PSR = np.array(
    [[0.0, 0.0, 2.0, -85.1], [-2.0, 0.0, 0.0, 115.2], [0.0, 2.0, 0.0, -125.8], [0, 0, 0, 1]]
)


def _reference(data: torch.Tensor, affine: np.ndarray, options: dict):
    """Data and affine of the data module's own TorchIO pipeline (the reference)."""
    image = tio.ScalarImage(tensor=data, affine=affine)
    out = build_preprocessing(PreprocessingConfig.from_mapping(options))(image)
    return out.data, np.asarray(out.affine)


@pytest.mark.parametrize(
    "options",
    [
        {"canonical": True},
        {"canonical": True, "resize_shape": [16, 20, 20]},
        {"canonical": True, "crop_or_pad_shape": [24, 32, 32], "intensity_percentiles": [2, 98]},
        {"canonical": True, "target_spacing": [3.0, 3.0, 3.0], "crop_or_pad_shape": [16, 16, 16]},
        {"canonical": False, "resize_shape": [10, 12, 8], "intensity_percentiles": None},
    ],
)
def test_apply_matches_the_data_module_preprocessing(options):
    """Grid and intensities: the record's replay equals the data module's pipeline on an image
    stored in another orientation with intensities far outside [0, 1]."""
    shape = (30, 30, 22)
    data = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)) * 900.0 - 150.0
    if options.get("intensity_percentiles", 1) is None:
        data = data.clamp(0, 800) / 800.0  # no rescaling: the images must already be in [0, 1]
    record = PreprocessingConfig.from_mapping(options)
    out = record.apply(Volume(data, PSR, "img.nii.gz", "int16"))
    ref_data, ref_affine = _reference(data, PSR, options)
    assert out.data.shape == ref_data.shape and out.data.dtype == torch.float32
    assert torch.equal(out.data, ref_data)
    np.testing.assert_allclose(out.affine, ref_affine, atol=1e-9)
    assert out.path == "img.nii.gz" and out.file_dtype == "int16"
    assert float(out.data.min()) >= 0.0 and float(out.data.max()) <= 1.0
    if options["canonical"]:
        assert nib.aff2axcodes(out.affine) == ("R", "A", "S")


def test_2d_grid_and_dimension_checks():
    aff = np.diag([1.0, 1.5, 1.0, 1.0])
    aff[:, [0, 1]] = aff[:, [1, 0]]  # axes stored (A, R)
    record = PreprocessingConfig.from_mapping({"canonical": True, "resize_shape": [16, 16]})
    image = Volume(torch.linspace(-5, 50, 22 * 18).reshape(1, 22, 18), aff)
    out = record.apply(image)
    assert out.shape == (16, 16) and out.dim == 2
    assert nib.aff2axcodes(out.affine)[:2] == ("R", "A")
    assert float(out.data.min()) == 0.0 and float(out.data.max()) == 1.0
    with pytest.raises(ValueError, match="2D resize_shape"):
        record.apply(Volume(torch.zeros(1, 8, 8, 8), np.eye(4)))


def test_record_round_trip_and_checks():
    record = PreprocessingConfig.from_mapping(
        {"resize_shape": [8, 8, 8], "intensity_percentiles": [1, 99]}
    )
    assert record == PreprocessingConfig(resize_shape=(8, 8, 8), intensity_percentiles=(1, 99))
    plain = record.to_dict()
    assert (
        PreprocessingConfig.is_record(plain) and PreprocessingConfig.from_mapping(plain) == record
    )
    assert not PreprocessingConfig.is_record({"resize_shape": [8, 8, 8]})
    buffer = io.BytesIO()
    torch.save({"record": plain}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["record"] == plain  # plain types only
    assert record.signature() == PreprocessingConfig.from_mapping(plain).signature()
    assert record.signature() != PreprocessingConfig().signature()
    clamp_only = PreprocessingConfig(canonical=False, intensity_percentiles=None)
    out = clamp_only.apply(Volume(torch.full((1, 5, 6, 7), 1.25), PSR))
    assert out.shape == (5, 6, 7) and np.array_equal(out.affine, PSR)
    assert float(out.data.max()) == 1.0  # Clamp(0, 1) is part of the record
    for options, message in (
        ({"resize_shape": [0, 8, 8]}, "resize_shape"),
        ({"resize_shap": [8, 8, 8]}, "resize_shap"),
        ({"intensity_percentiles": [99, 1]}, "intensity_percentiles"),
        ({"target_spacing": 2.0}, "target_spacing"),
    ):
        with pytest.raises(ValueError, match=message):
            PreprocessingConfig.from_mapping(options)
