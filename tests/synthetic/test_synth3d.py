"""Knee phantoms: labels, thin cartilage, determinism and the NIfTI pool."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from rdmm_lightning.synthetic import SYNTH3D_COLUMNS, generate_knee_phantom, write_synth3d_pool
from rdmm_lightning.synthetic.synth3d import subject_seed


@pytest.fixture(scope="module")
def phantom():
    return generate_knee_phantom(3)


def test_phantom_arrays(phantom):
    image, label = phantom
    assert image.shape == label.shape == (48, 64, 64)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.1
    assert set(np.unique(label)) == {0, 1, 2}
    # cartilage is bright compared with the rest of the image
    assert image[label > 0].mean() > image[label == 0].mean() + 0.2


def test_cartilage_is_thin(phantom):
    _, label = phantom
    for k in (1, 2):
        frac = (label == k).mean()
        assert 0.001 < frac < 0.03
        per_column = (label == k).sum(axis=2)  # along the infero-superior axis
        assert np.median(per_column[per_column > 0]) <= 4
    # femoral cartilage lies above tibial cartilage
    z = np.arange(64)
    zf = (label == 1).sum((0, 1)) @ z / (label == 1).sum()
    zt = (label == 2).sum((0, 1)) @ z / (label == 2).sum()
    assert zf > zt


def test_deterministic_and_varied():
    a = generate_knee_phantom(11, (24, 32, 32))
    b = generate_knee_phantom(11, (24, 32, 32))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    others = [
        generate_knee_phantom(12, (24, 32, 32)),
        generate_knee_phantom(11, (24, 32, 32), side="left"),
        generate_knee_phantom(11, (24, 32, 32), visit=1),
    ]
    for image, _ in others:
        assert not np.array_equal(image, a[0])
    with pytest.raises(ValueError):
        generate_knee_phantom(0, side="middle")


def test_write_pool(tmp_path):
    spacing = (2.0, 1.0, 1.0)
    shape = (24, 32, 32)
    csv_path = write_synth3d_pool(tmp_path, subjects=2, seed=5, shape=shape, visits=2)
    assert csv_path == tmp_path / "pool.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == SYNTH3D_COLUMNS and len(rows) == 8
    assert {r["subject"] for r in rows} == {"sub-0000", "sub-0001"}
    assert {r["side"] for r in rows} == {"left", "right"}
    assert {r["visit"] for r in rows} == {"0", "1"}
    key = ("sub-0001", "left", "1")
    row = next(r for r in rows if (r["subject"], r["side"], r["visit"]) == key)
    assert row["path"] == "images/sub-0001_v1_left.nii.gz"
    assert row["label"] == "labels/sub-0001_v1_left.nii.gz"

    img = nib.load(tmp_path / row["path"])
    lab = nib.load(tmp_path / row["label"])
    assert img.shape == lab.shape == shape
    assert img.get_data_dtype() == np.float32 and lab.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), spacing)
    expected = np.diag([*spacing, 1.0])
    expected[:3, 3] = [-0.5 * (n - 1) * s for n, s in zip(shape, spacing)]
    for im in (img, lab):
        np.testing.assert_allclose(im.affine, expected)
        assert int(im.header["qform_code"]) == 1 and int(im.header["sform_code"]) == 1
        np.testing.assert_allclose(im.get_qform(), expected)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    itk = sitk.ReadImage(str(tmp_path / row["path"]))
    np.testing.assert_allclose(itk.GetSpacing(), spacing)

    # reproducible per (seed, subject)
    image, label = generate_knee_phantom(subject_seed(5, 1), shape, spacing, "left", 1)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), image)
    np.testing.assert_array_equal(np.asanyarray(lab.dataobj), label)

    with pytest.raises(ValueError):
        write_synth3d_pool(tmp_path / "x", subjects=0)
