"""prepare_synthetic: reuse of a split generated with the same options, regeneration (logged,
atomic) when they differ, and an error for a split folder it did not write."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from datamodules import PairDataModule
from datamodules.synthetic import MANIFEST, prepare_synthetic

TINY2D = {"num_train": 1, "num_val": 1, "num_test": 1, "size": 48}


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def rows(csv_path: Path) -> int:
    return len(csv_path.read_text().splitlines()) - 1


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "datamodules.synthetic"]


@pytest.fixture
def synth2d(tmp_path) -> Path:
    root = tmp_path / "synth2d"
    prepare_synthetic("synth2d", root, TINY2D)
    return root


def test_same_options_reuse_every_split(synth2d, caplog):
    for split in ("train", "val", "test"):
        record = json.loads((synth2d / split / MANIFEST).read_text())
        assert record["kind"] == "synth2d" and record["options"]["size"] == 48
    before = mtimes(synth2d)
    with caplog.at_level(logging.WARNING):
        prepare_synthetic("synth2d", synth2d, dict(TINY2D))
        PairDataModule(
            data_dir=str(synth2d),
            synthetic="synth2d",
            synthetic_options=TINY2D,
            train_pairs="train/pairs.csv",
        ).setup("fit")
    assert mtimes(synth2d) == before
    assert warnings_of(caplog) == []


def test_equal_options_of_other_types_are_reused(tmp_path):
    options = {"train_subjects": 1, "eval_subjects": 2, "num_val": 1, "num_test": 1}
    prepare_synthetic("synth3d", tmp_path, {**options, "shape": (8, 8, 8), "spacing": (2, 1, 1)})
    before = mtimes(tmp_path)
    prepare_synthetic("synth3d", tmp_path, {**options, "shape": [8.0, 8, 8]})  # default spacing
    assert mtimes(tmp_path) == before


def test_other_options_regenerate_only_the_splits_they_change(synth2d, caplog):
    before = mtimes(synth2d)
    with caplog.at_level(logging.WARNING):
        prepare_synthetic("synth2d", synth2d, {**TINY2D, "num_train": 2})
    assert rows(synth2d / "train" / "pairs.csv") == 2
    assert json.loads((synth2d / "train" / MANIFEST).read_text())["options"]["num_train"] == 2
    (message,) = warnings_of(caplog)
    assert str(synth2d / "train") in message and "synthetic_options.num_train=1 -> 2" in message
    after = mtimes(synth2d)
    for split in ("val", "test"):  # not depending on num_train: untouched
        kept = {k: v for k, v in before.items() if k.startswith(split)}
        assert {k: after[k] for k in kept} == kept
    assert sorted(p.name for p in synth2d.iterdir()) == ["test", "train", "val"]  # no temp dirs


def test_a_split_of_another_kind_is_regenerated(tmp_path, caplog):
    options = {"train_subjects": 1, "eval_subjects": 2, "num_val": 1, "num_test": 1}
    prepare_synthetic("synth3d", tmp_path, {**options, "shape": (8, 8, 8)})
    with caplog.at_level(logging.WARNING):
        prepare_synthetic("synth2d", tmp_path, TINY2D)
    assert (tmp_path / "train" / "pairs.csv").is_file()
    assert not (tmp_path / "train" / "pool.csv").exists()
    assert any("synthetic='synth3d' -> 'synth2d'" in m for m in warnings_of(caplog))


def test_a_failed_regeneration_keeps_the_previous_split(synth2d):
    before = mtimes(synth2d)
    with pytest.raises(ValueError, match="size must be >= 48"):
        prepare_synthetic("synth2d", synth2d, {**TINY2D, "size": 40})
    assert mtimes(synth2d) == before
    assert sorted(p.name for p in synth2d.iterdir()) == ["test", "train", "val"]


@pytest.mark.parametrize("files", [["pairs.csv", "a.nii.gz"], ["notes.txt"]])
def test_a_foreign_split_folder_is_an_error_and_kept(tmp_path, files):
    split = tmp_path / "train"
    split.mkdir()
    for name in files:
        (split / name).write_text("mine\n")
    with pytest.raises(ValueError) as info:
        prepare_synthetic("synth2d", tmp_path, TINY2D)
    message = str(info.value)
    assert "\n" not in message and str(split) in message and MANIFEST in message
    assert sorted(p.name for p in split.iterdir()) == sorted(files)
    assert all((split / name).read_text() == "mine\n" for name in files)
    assert not list(tmp_path.glob(".partial-*"))


def test_an_empty_split_folder_is_filled(tmp_path):
    (tmp_path / "val").mkdir()
    prepare_synthetic("synth2d", tmp_path, TINY2D)
    assert rows(tmp_path / "val" / "pairs.csv") == 1 and (tmp_path / "val" / MANIFEST).is_file()
