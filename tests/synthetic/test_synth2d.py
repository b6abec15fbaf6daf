"""Synthetic 2D pairs: determinism, per-object motion, labels, pre-weights and files."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from rdmm_lightning.synthetic import (
    SYNTH2D_COLUMNS,
    SYNTH2D_INSIDE_H2,
    SYNTH2D_OUTSIDE_H2,
    SYNTH2D_SIGMAS,
    generate_synth2d_pair,
    predefined_pre_weights,
    synth2d_pre_weights,
    write_synth2d,
)
from rdmm_lightning.synthetic.nifti import DatasetDirError

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def pairs():
    return [generate_synth2d_pair(s, 200) for s in SEEDS]


def _fields(p):
    return (p.source, p.target, p.source_label, p.target_label, p.source_region, p.target_region)


def test_deterministic():
    a, b, c = (generate_synth2d_pair(s, 64) for s in (5, 5, 6))
    for x, y in zip(_fields(a), _fields(b)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert not np.array_equal(a.source, c.source)


def test_shapes_dtypes_and_ranges(pairs):
    for p in pairs:
        for img in (p.source, p.target):
            assert img.shape == (200, 200) and img.dtype == np.float32
            assert img.min() >= 0.0 and img.max() <= 1.0
        for lab in (p.source_label, p.target_label, p.source_region, p.target_region):
            assert lab.shape == (200, 200) and lab.dtype == np.uint8
        assert set(np.unique(p.source_region)) == {0, 1}
        assert p.num_objects >= 5  # foreground, two inner objects, at least two outer ones
        assert set(np.unique(p.source_label)) == set(range(p.num_objects + 1))
        assert set(np.unique(p.target_label)) == set(range(p.num_objects + 1))
        # inner objects (labels 2, 3) lie inside the foreground region and keep their labels
        for lab, region in ((p.source_label, p.source_region), (p.target_label, p.target_region)):
            assert region[(lab == 2) | (lab == 3)].all()
            assert not region[lab >= 4].any()
        # each object has its own intensity
        means = [p.source[p.source_label == k].mean() for k in range(1, p.num_objects + 1)]
        assert np.min(np.diff(np.sort(means))) > 0.03


def test_labels_move_with_similar_areas(pairs):
    for p in pairs:
        assert (p.source_label != p.target_label).mean() > 0.01
        for k in range(1, p.num_objects + 1):
            ratio = (p.target_label == k).sum() / (p.source_label == k).sum()
            assert 0.6 <= ratio <= 1.6, (p.seed, k, ratio)


def _centroids(label, region):
    pts = [np.argwhere(region > 0).mean(0)]
    pts += [np.argwhere(label == k).mean(0) for k in range(2, int(label.max()) + 1)]
    return np.array(pts)


def test_motion_is_not_one_affine(pairs):
    for p in pairs:
        src = _centroids(p.source_label, p.source_region)
        tgt = _centroids(p.target_label, p.target_region)
        design = np.hstack([src, np.ones((len(src), 1))])
        coef, *_ = np.linalg.lstsq(design, tgt, rcond=None)
        residual = np.linalg.norm(design @ coef - tgt, axis=1)
        assert residual.max() > 1.0, (p.seed, residual)


def test_predefined_pre_weights():
    n = 100
    xx, yy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    dist = np.hypot(xx - 50.0, yy - 45.0)
    mask = (dist < 25).astype(np.uint8)
    sigma = 2.0
    h = predefined_pre_weights(mask, SYNTH2D_INSIDE_H2, SYNTH2D_OUTSIDE_H2, sigma)
    assert h.shape == (4, n, n) and h.dtype == np.float32
    assert (h >= 0).all()
    np.testing.assert_allclose((h.astype(np.float64) ** 2).sum(0), 1.0, atol=1e-5)
    far_in, far_out = dist < 25 - 4 * sigma - 2, dist > 25 + 4 * sigma + 2
    for i in range(4):
        np.testing.assert_allclose(h[i][far_in], np.sqrt(SYNTH2D_INSIDE_H2[i]), atol=1e-6)
        np.testing.assert_allclose(h[i][far_out], np.sqrt(SYNTH2D_OUTSIDE_H2[i]), atol=1e-6)
    # blended across the boundary: the last weight rises monotonically from inside to outside
    ring = h[3][50, 45:100]
    assert (np.diff(ring) >= -1e-6).all() and 0.2 < h[3][50, 45 + 25] < 0.95
    sharp = predefined_pre_weights(mask, [1, 1], [0, 1], 0)
    np.testing.assert_allclose(sharp[:, 50, 45], [np.sqrt(0.5)] * 2, atol=1e-6)
    with pytest.raises(ValueError):
        predefined_pre_weights(mask, [0.5, 0.5], [1.0], 1.0)


def test_gt_pre_weights_of_a_pair(pairs):
    p = pairs[0]
    h = synth2d_pre_weights(p)
    assert h.shape == (len(SYNTH2D_SIGMAS), 200, 200)
    np.testing.assert_allclose((h.astype(np.float64) ** 2).sum(0), 1.0, atol=1e-5)
    assert SYNTH2D_SIGMAS == (0.05, 0.1, 0.15, 0.2)
    assert SYNTH2D_INSIDE_H2 == (0.2, 0.5, 0.3, 0.0)
    assert SYNTH2D_OUTSIDE_H2 == (0.0, 0.0, 0.0, 1.0)


def test_write_synth2d(tmp_path):
    csv_path = write_synth2d(tmp_path / "a", num_pairs=2, seed=7, size=64)
    assert csv_path == tmp_path / "a" / "pairs.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and tuple(rows[0]) == SYNTH2D_COLUMNS
    assert rows[1]["source"] == "pair_001_source.nii.gz"
    for row in rows:
        for col in SYNTH2D_COLUMNS:
            img = nib.load(csv_path.parent / row[col])
            assert img.shape == (64, 64)
            np.testing.assert_array_equal(img.affine, np.eye(4))
            expected = np.float32 if col in ("source", "target") else np.uint8
            assert img.get_data_dtype() == expected
    # same seed -> same bytes; an existing dataset folder may be rewritten
    again = write_synth2d(tmp_path / "b", num_pairs=2, seed=7, size=64)
    for name in ("pair_000_source.nii.gz", "pair_001_target_label.nii.gz"):
        assert (csv_path.parent / name).read_bytes() == (again.parent / name).read_bytes()
    write_synth2d(tmp_path / "b", num_pairs=1, seed=7, size=64)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetDirError):
        write_synth2d(tmp_path / "c", num_pairs=1, size=64)
