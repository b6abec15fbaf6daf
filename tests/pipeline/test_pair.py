"""prepare_pair: reading, validation and resampling into the target's physical space."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.pipeline.pair import normalize_intensities, prepare_pair
from tests.io.geometry import make_sitk, sitk_array
from tests.pipeline.helpers import GEOMETRIES, write_pair


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("pair"), 3)


def test_source_resampled_like_simpleitk(files):
    pair = prepare_pair(files["source"], files["target"], source_label=files["source_label"])
    assert pair.working_shape == GEOMETRIES[3][1]["size"]
    assert pair.domain_spacing == pytest.approx(tuple(1 / (n - 1) for n in pair.working_shape))
    assert pair.source.shape == pair.target.shape == (1, 1, *pair.working_shape)
    assert 0.0 <= float(pair.source.min()) and float(pair.source.max()) <= 1.0
    # the working source is the source resampled into the target grid (identity in world space)
    source = sitk.ReadImage(str(files["source"]))
    target = sitk.ReadImage(str(files["target"]))
    lo, hi = np.percentile(sitk_array(source), [0.5, 99.5])
    normalised = sitk.Clamp(
        (sitk.Cast(source, sitk.sitkFloat64) - lo) / (hi - lo), lowerBound=0, upperBound=1
    )
    expected = sitk_array(sitk.Resample(normalised, target, sitk.Transform(), sitk.sitkLinear, 0.0))
    got = pair.source[0, 0].numpy()
    assert np.abs(got - expected).max() < 1e-4
    lab = sitk.Resample(
        sitk.ReadImage(str(files["source_label"])),
        target,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
    )
    assert pair.source_label.dtype == torch.int64
    assert (pair.source_label[0, 0].numpy() != sitk_array(lab)).mean() < 0.002


def test_working_shape_and_physical_spacing(files):
    pair = prepare_pair(
        files["source"],
        files["target"],
        target_label=files["target_label"],
        working_shape=(10, 12, 8),
        working_spacing_mode="physical",
    )
    assert pair.working_shape == (10, 12, 8) and pair.target_label.shape == (1, 1, 10, 12, 8)
    tgt = pair.target_volume
    # corners aligned: the working grid spans the target's field of view
    corner = pair.working_affine @ np.array([9.0, 11.0, 7.0, 1.0])
    np.testing.assert_allclose(corner, tgt.affine @ np.array([19.0, 21.0, 15.0, 1.0]), atol=1e-9)
    # physical mode keeps the working voxels' aspect ratio, largest extent = 1
    mm = np.linalg.norm(pair.working_affine[:3, :3], axis=0)
    ratio = np.asarray(pair.domain_spacing) / mm
    np.testing.assert_allclose(ratio, ratio[0])
    assert max(
        h * (n - 1) for h, n in zip(pair.domain_spacing, pair.working_shape)
    ) == pytest.approx(1)


def test_normalize_intensities():
    x = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10)
    out, (lo, hi) = normalize_intensities(x, "percentile")
    assert lo == pytest.approx(np.percentile(np.arange(1000), 0.5))
    assert float(out.min()) == 0 and float(out.max()) == 1
    out, (lo, hi) = normalize_intensities(x, "minmax")
    assert (lo, hi) == (0, 999)
    assert normalize_intensities(x, "none")[0] is x
    with pytest.raises(ValueError, match="img.nii: image is constant"):
        normalize_intensities(torch.ones(1, 4, 4), "percentile", "img.nii")


def _save(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), path)
    return path


def test_errors_name_the_file(files, tmp_path):
    src, tgt = files["source"], files["target"]
    cases = {
        "missing.nii.gz": (tmp_path / "missing.nii.gz", tgt, {}),
        "nan.nii.gz": (
            _save(tmp_path / "nan.nii.gz", np.full((6, 6, 6), np.nan, np.float32)),
            tgt,
            {},
        ),
        "four.nii.gz": (
            _save(tmp_path / "four.nii.gz", np.zeros((6, 6, 6, 2), np.float32)),
            tgt,
            {},
        ),
        "flat.nii.gz": (_save(tmp_path / "flat.nii.gz", np.ones((6, 6, 6), np.float32)), tgt, {}),
        "two.nii.gz": (
            _save(tmp_path / "two.nii.gz", np.random.rand(6, 6).astype(np.float32)),
            tgt,
            {},
        ),
    }
    float_labels = make_sitk(np.full(GEOMETRIES[3][0]["size"], 0.5, np.float32), GEOMETRIES[3][0])
    sitk.WriteImage(float_labels, str(tmp_path / "float_label.nii.gz"))
    cases["float_label.nii.gz"] = (src, tgt, {"source_label": tmp_path / "float_label.nii.gz"})
    cases["target_label.nii.gz"] = (src, tgt, {"source_label": files["target_label"]})
    for name, (s, t, kw) in cases.items():
        with pytest.raises(ValueError) as info:
            prepare_pair(s, t, **kw)
        message = str(info.value)
        assert name in message and "\n" not in message, message
    # no overlap in physical space
    far = np.eye(4)
    far[:3, 3] = 1000.0
    _save(tmp_path / "far.nii.gz", np.random.rand(6, 6, 6).astype(np.float32), far)
    with pytest.raises(ValueError, match="far.nii.gz: does not overlap"):
        prepare_pair(tmp_path / "far.nii.gz", tgt)
    with pytest.raises(ValueError, match="working_spacing_mode"):
        prepare_pair(src, tgt, working_spacing_mode="voxel")
    with pytest.raises(ValueError, match="working_shape"):
        prepare_pair(src, tgt, working_shape=(8, 8))
