"""Unreadable training volumes: skipped, counted, logged once, replaced; too many: an error."""

from __future__ import annotations

import logging

import pytest

from datamodules import DataFaultError, PairDataModule
from rdmm_lightning.io import read_image

from .helpers import make_pool, truncate


def _datamodule(pool, **kwargs) -> PairDataModule:
    options = dict(
        pool=str(pool),
        pairs_per_epoch=24,
        batch_size=4,
        preprocessing={"crop_or_pad_shape": [16, 16, 16]},
    )
    options.update(kwargs)
    return PairDataModule(**options)


def _pairs(dm: PairDataModule, epoch: int = 0) -> list[tuple[str, str]]:
    dm.set_epoch(epoch)
    loader = dm.train_dataloader()
    dm.set_epoch(epoch)
    return [p for b in loader for p in zip(b["source_path"], b["target_path"])]


def test_truncated_gzip_is_detected(tmp_path):
    pool = make_pool(tmp_path, subjects=1, per_subject=1, labels=False)
    path = truncate(tmp_path / "img" / "sub00_v0.nii.gz")
    with pytest.raises(ValueError, match="sub00_v0.*cannot read"):
        read_image(path)  # SimpleITK alone would return zeros
    del pool


def test_corrupt_volume_skipped_counted_logged_once_replaced(tmp_path, caplog):
    pool = make_pool(tmp_path, subjects=6, per_subject=2, labels=False)
    bad = str(truncate(tmp_path / "img" / "sub02_v1.nii.gz"))
    dm = _datamodule(pool, max_failure_fraction=0.5, fault_log=str(tmp_path / "faults.txt"))
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="datamodules.faults"):
        first = _pairs(dm, 0)
        second = _pairs(dm, 1)
    assert len(first) == len(second) == 24  # every pair was delivered
    assert all(bad not in pair for pair in first + second)
    summary = dm.fault_summary()
    assert summary["unreadable"] == [bad]
    assert summary["pairs_replaced"] >= 1
    assert len([r for r in caplog.records if bad in r.getMessage()]) == 1
    assert (tmp_path / "faults.txt").read_text().splitlines()[0].split("\t")[0] == bad
    assert len((tmp_path / "faults.txt").read_text().splitlines()) == 1
    # replacements are deterministic given the item: a fresh run yields the same pairs
    fresh = _datamodule(pool, max_failure_fraction=0.5)
    fresh.setup("fit")
    assert _pairs(fresh, 0) == first


def test_too_many_failures_stop_with_clear_error(tmp_path):
    pool = make_pool(tmp_path, subjects=4, per_subject=2, labels=False)
    for name in ("sub00_v0", "sub01_v0", "sub02_v1"):
        truncate(tmp_path / "img" / f"{name}.nii.gz")
    dm = _datamodule(pool, max_failure_fraction=0.25)  # 3 of 8 volumes > 25%
    dm.setup("fit")
    with pytest.raises(DataFaultError, match="max_failure_fraction=0.25"):
        for _ in range(3):
            _pairs(dm, _)


def test_faults_shared_across_two_workers(tmp_path):
    pool = make_pool(tmp_path, subjects=6, per_subject=2, labels=False)
    bad = str(truncate(tmp_path / "img" / "sub04_v0.nii.gz"))
    dm = _datamodule(
        pool, num_workers=2, max_failure_fraction=0.5, fault_log=str(tmp_path / "faults.txt")
    )
    dm.setup("fit")
    pairs = _pairs(dm, 0) + _pairs(dm, 1)
    assert len(pairs) == 48 and all(bad not in p for p in pairs)
    assert dm.fault_summary()["unreadable"] == [bad]  # seen by the main process
    lines = (tmp_path / "faults.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [bad]  # logged once over workers
    single = _datamodule(pool, max_failure_fraction=0.5)
    single.setup("fit")
    assert _pairs(single, 1) == pairs[24:]  # same pairs whatever the worker count
