"""Pool and pair-list indexes."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest

from datamodules.pool import read_pair_csv, read_pool_csv, read_pool_folder

from .helpers import make_pairs, make_pool, write_csv, write_volume


def test_pool_csv_index(tmp_path):
    table = read_pool_csv(make_pool(tmp_path), label_column="label", extra_columns=("side",))
    assert len(table) == 8 and table.num_subjects == 4
    assert table.paths.dtype.kind == "S"  # fixed-width bytes, no per-entry Python objects
    assert table.path(0) == str(tmp_path / "img" / "sub00_v0.nii.gz")
    assert table.label(0) == str(tmp_path / "lab" / "sub00_v0.nii.gz")
    assert table.has_all_labels
    assert {table.group_value("side", i) for i in range(8)} == {"left", "right"}


def test_pool_csv_missing_column_names_it(tmp_path):
    pool = make_pool(tmp_path, subjects=2, per_subject=1)
    with pytest.raises(ValueError, match="'patient'.*subject_column"):
        read_pool_csv(pool, subject_column="patient")


def test_pool_folder_with_subject_pattern(tmp_path):
    for name in ("A_1.nii.gz", "A_2.nii.gz", "B_1.nii.gz"):
        write_volume(tmp_path / name, (8, 8, 8))
    table = read_pool_folder(tmp_path, "*.nii.gz", subject_pattern=r"^([A-Z])_")
    assert len(table) == 3 and table.num_subjects == 2 and table.labels is None
    with pytest.raises(ValueError, match="pool_pattern"):
        read_pool_folder(tmp_path, "*.nrrd")


def test_large_index_is_fast_and_small(tmp_path):
    rows = [
        [f"img/v{i % 2000}.nii.gz", f"P{i // 9}", "left" if i % 2 else "right"]
        for i in range(22_950)
    ]
    csv = write_csv(tmp_path / "big.csv", ["path", "subject", "side"], rows)
    # fast = the work is one pass over the CSV: the index opens and stats no other file
    # (none of the 22,950 listed paths exists; they are checked when a volume is read)
    touched = []
    real_stat, real_open = os.stat, builtins.open

    def stat(path, *args, **kwargs):
        touched.append(("stat", os.fspath(path)))
        return real_stat(path, *args, **kwargs)

    def open_(file, *args, **kwargs):
        touched.append(("open", os.fspath(file) if isinstance(file, (str, os.PathLike)) else file))
        return real_open(file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "stat", stat)
        mp.setattr(builtins, "open", open_)
        table = read_pool_csv(csv, extra_columns=("side",))
    assert {path for _, path in touched} == {str(csv)} and len(touched) <= 4, touched[:5]
    assert len(table) == 22_950 and table.num_subjects == 2550
    nbytes = table.paths.nbytes + table.subjects.nbytes + table.groups["side"].nbytes
    assert nbytes < 5e6


def test_pair_list_missing_label_names_the_file(tmp_path):
    make_pool(tmp_path, subjects=2, per_subject=1)
    pairs = make_pairs(tmp_path, [("sub00_v0", "sub01_v0")])
    (tmp_path / "lab" / "sub01_v0.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"target_label file not found: .*sub01_v0\.nii\.gz"):
        read_pair_csv(pairs)
    unlabeled = make_pairs(tmp_path, [("sub00_v0", "sub01_v0")], labels=False)
    with pytest.raises(ValueError, match="labels are required"):
        read_pair_csv(unlabeled)
    table = read_pair_csv(unlabeled, require_labels=False)
    assert len(table) == 1 and table.volumes.labels is None


def test_pair_list_empty_label_cell(tmp_path):
    make_pool(tmp_path, subjects=2, per_subject=1)
    csv = write_csv(
        tmp_path / "p.csv",
        ["source", "target", "source_label", "target_label"],
        [["img/sub00_v0.nii.gz", "img/sub01_v0.nii.gz", "lab/sub00_v0.nii.gz", ""]],
    )
    with pytest.raises(ValueError, match=r"missing target_label for .*sub01_v0"):
        read_pair_csv(csv)


def test_pair_list_shares_volumes(tmp_path):
    make_pool(tmp_path, subjects=3, per_subject=1)
    pairs = make_pairs(tmp_path, [("sub00_v0", "sub01_v0"), ("sub01_v0", "sub02_v0")])
    table = read_pair_csv(pairs)
    assert len(table.volumes) == 3
    assert np.array_equal(table.pairs, [[0, 1], [1, 2]])
