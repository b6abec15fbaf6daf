"""TrainingGrid: the grid of the data module's preprocessing, rebuilt for a new target."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from datamodules.preprocessing import PreprocessingConfig, build_preprocessing
from rdmm_lightning.io.training_grid import TrainingGrid

# IXI-like storage: voxel axes point P, S, R (not RAS), 2 mm
PSR = np.array(
    [[0.0, 0.0, 2.0, -85.1], [-2.0, 0.0, 0.0, 115.2], [0.0, 2.0, 0.0, -125.8], [0, 0, 0, 1]]
)


def _preprocessed_grid(shape, affine, options):
    """Shape and affine the data module's TorchIO preprocessing gives (the reference)."""
    import torchio as tio

    image = tio.ScalarImage(tensor=torch.rand((1, *shape)), affine=affine)
    out = build_preprocessing(PreprocessingConfig.from_mapping(options))(image)
    return tuple(out.spatial_shape), np.asarray(out.affine)


@pytest.mark.parametrize(
    "options",
    [
        {"canonical": True},
        {"canonical": True, "resize_shape": [16, 20, 20]},
        {"canonical": True, "crop_or_pad_shape": [24, 32, 32]},
        {"canonical": True, "target_spacing": [3.0, 3.0, 3.0], "crop_or_pad_shape": [16, 16, 16]},
        {"canonical": False, "resize_shape": [10, 12, 8]},
    ],
)
def test_apply_matches_the_data_module_preprocessing(options):
    shape = (30, 30, 22)
    grid = TrainingGrid.from_preprocessing(options)
    got_shape, got_affine = grid.apply(shape, PSR)
    ref_shape, ref_affine = _preprocessed_grid(shape, PSR, options)
    assert got_shape == ref_shape
    np.testing.assert_allclose(got_affine, ref_affine, atol=1e-9)
    if options["canonical"]:
        assert nib.aff2axcodes(got_affine) == ("R", "A", "S")


def test_2d_grid_and_dimension_checks():
    aff = np.diag([1.0, 1.5, 1.0, 1.0])
    aff[:, [0, 1]] = aff[:, [1, 0]]  # axes stored (A, R)
    grid = TrainingGrid.from_preprocessing({"canonical": True, "resize_shape": [16, 16]})
    shape, affine = grid.apply((22, 18), aff)
    assert shape == (16, 16)
    assert nib.aff2axcodes(affine)[:2] == ("R", "A")
    with pytest.raises(ValueError, match="2D resize_shape"):
        grid.apply((8, 8, 8), np.eye(4))


def test_from_config_and_no_op():
    assert TrainingGrid.from_training_config(None) is None
    assert TrainingGrid.from_training_config({"data": {"root": "x"}}) is None
    grid = TrainingGrid.from_training_config(
        {"data": {"preprocessing": {"resize_shape": [8, 8, 8], "intensity_percentiles": [1, 99]}}}
    )
    assert grid == TrainingGrid(canonical=True, resize_shape=(8, 8, 8))
    shape, affine = TrainingGrid(canonical=False).apply((5, 6, 7), PSR)
    assert shape == (5, 6, 7) and np.array_equal(affine, PSR)
    with pytest.raises(ValueError, match="resize_shape"):
        TrainingGrid.from_preprocessing({"resize_shape": [0, 8, 8]})
