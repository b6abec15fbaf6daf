"""PairDataModule: batch format, epochs under Lightning, validation lists, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from datamodules import PairDataModule

from .helpers import make_pairs, make_pool, write_csv


class Recorder(pl.LightningModule):
    """Records the (source, target) paths of every training batch, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[tuple[str, str]]] = {}
        self.val_batches = 0

    def training_step(self, batch, batch_idx):
        pairs = list(zip(batch["source_path"], batch["target_path"]))
        self.seen.setdefault(self.current_epoch, []).extend(pairs)
        return (self.weight * batch["source"].mean()).sum()

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )


@pytest.fixture
def pool(tmp_path):
    return make_pool(tmp_path, subjects=4, per_subject=2)


def test_batch_format(pool, tmp_path):
    pairs = make_pairs(tmp_path, [("sub00_v0", "sub01_v1"), ("sub02_v0", "sub03_v1")])
    dm = PairDataModule(
        pool=str(pool),
        label_column="label",
        train_labels=True,
        val_pairs=str(pairs),
        pairs_per_epoch=4,
        batch_size=2,
        preprocessing={"resize_shape": [12, 12, 12]},
    )
    dm.setup("fit")
    for batch in (next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))):
        assert set(batch) == {
            "source",
            "target",
            "source_label",
            "target_label",
            "source_path",
            "target_path",
            "spacing",
        }
        for key in ("source", "target"):
            assert batch[key].shape == (2, 1, 12, 12, 12) and batch[key].dtype == torch.float32
            assert 0 <= batch[key].min() and batch[key].max() <= 1
        for key in ("source_label", "target_label"):
            assert batch[key].shape == (2, 1, 12, 12, 12) and batch[key].dtype == torch.int64
        assert batch["spacing"].shape == (2, 3) and batch["spacing"].dtype == torch.float32
        assert all(isinstance(p, str) for p in batch["source_path"] + batch["target_path"])
    unlabeled = PairDataModule(pool=str(pool), pairs_per_epoch=2, batch_size=2)
    batch = next(iter(unlabeled.train_dataloader()))
    assert "source_label" not in batch and batch["source"].shape == (2, 1, 16, 16, 16)


def test_eval_volumes_excluded_from_training(pool, tmp_path):
    pairs = make_pairs(tmp_path, [("sub00_v0", "sub01_v1")])
    dm = PairDataModule(pool=str(pool), val_pairs=str(pairs), pairs_per_epoch=40)
    dm.setup("fit")
    assert len(dm.train_set.table) == 6
    kept = PairDataModule(pool=str(pool), val_pairs=str(pairs), exclude_eval_volumes=False)
    kept.setup("fit")
    assert len(kept.train_set.table) == 8


def test_epochs_under_lightning_with_persistent_workers(pool, tmp_path):
    dm = PairDataModule(pool=str(pool), pairs_per_epoch=6, batch_size=2, num_workers=2, seed=3)
    model = Recorder()
    _trainer(3).fit(model, datamodule=dm)
    assert dm.persistent_workers and sorted(model.seen) == [0, 1, 2]
    table, subjects = dm.train_set.table, dm.train_set.table.subjects
    for epoch, seen in model.seen.items():
        expected = [
            (table.path(s), table.path(t)) for _, _, s, t in dm._train_sampler.epoch_keys(epoch)
        ]
        assert seen == expected  # set_epoch reached the sampler before every epoch
        index = {table.path(i): i for i in range(len(table))}
        assert all(subjects[index[s]] != subjects[index[t]] for s, t in seen)
    assert model.seen[0] != model.seen[1] != model.seen[2]


def test_same_group_and_flip_to_side(pool):
    dm = PairDataModule(pool=str(pool), same_group="side", pairs_per_epoch=20)
    dm.setup("fit")
    table = dm.train_set.table
    for _, _, s, t in dm.train_dataloader().sampler:
        assert table.group_value("side", s) == table.group_value("side", t)
    flipped = PairDataModule(pool=str(pool), side_column="side", flip_to_side="R")
    flipped.setup("fit")
    sides = [flipped.train_set.table.group_value("side", i) for i in range(8)]
    assert flipped.train_set.flips.tolist() == [s == "left" for s in sides]


def test_missing_validation_label_is_an_immediate_error(pool, tmp_path):
    csv = write_csv(
        tmp_path / "val.csv",
        ["source", "target", "source_label", "target_label"],
        [["img/sub00_v0.nii.gz", "img/sub01_v0.nii.gz", "lab/sub00_v0.nii.gz", "lab/nope.nii.gz"]],
    )
    dm = PairDataModule(pool=str(pool), val_pairs=str(csv))
    with pytest.raises(ValueError, match=r"target_label file not found: .*nope\.nii\.gz"):
        dm.setup("fit")


def test_config_errors_name_the_option(pool, tmp_path):
    with pytest.raises(ValueError, match="val_pairs: not found: .*missing.csv"):
        PairDataModule(pool=str(pool), val_pairs=str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="data_dir"):
        PairDataModule(data_dir=str(tmp_path / "nowhere"), pool="pool.csv")
    with pytest.raises(ValueError, match="crop_or_pad"):
        PairDataModule(pool=str(pool), preprocessing={"crop_or_pad": [8, 8, 8]})
    with pytest.raises(ValueError, match="side_column"):
        PairDataModule(pool=str(pool), flip_to_side="left")
    with pytest.raises(ValueError, match="synthetic"):
        PairDataModule(data_dir=str(tmp_path), synthetic="synth4d", pool="x.csv")
    with pytest.raises(ValueError, match="batch_size"):
        PairDataModule(pool=str(pool), batch_size=0)


def test_relative_paths_against_data_dir_and_no_validation(pool, tmp_path):
    dm = PairDataModule(data_dir=str(tmp_path), pool="pool.csv", pairs_per_epoch=2)
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []
    model = Recorder()
    _trainer(1).fit(model, datamodule=dm)
    assert len(model.seen[0]) == 2 and model.val_batches == 0


def test_shapes_that_differ_are_a_clear_error(tmp_path):
    from .helpers import write_volume

    rows = []
    for k, shape in enumerate([(16, 16, 16), (12, 16, 16)]):
        write_volume(tmp_path / f"v{k}.nii.gz", shape)
        rows.append([f"v{k}.nii.gz", f"S{k}"])
    pool = write_csv(tmp_path / "pool.csv", ["path", "subject"], rows)
    dm = PairDataModule(pool=str(pool), pairs_per_epoch=2, batch_size=2)
    with pytest.raises(ValueError, match="crop_or_pad_shape"):
        next(iter(dm.train_dataloader()))


def test_fixed_training_list(tmp_path):
    make_pool(tmp_path, subjects=3, per_subject=1)
    pairs = make_pairs(tmp_path, [("sub00_v0", "sub01_v0"), ("sub01_v0", "sub02_v0")])
    dm = PairDataModule(train_pairs=str(pairs), pairs_per_epoch=None, train_labels=True)
    loader = dm.train_dataloader()
    got = {(b["source_path"][0][-15:], b["target_path"][0][-15:]) for b in loader}
    assert got == {("sub00_v0.nii.gz", "sub01_v0.nii.gz"), ("sub01_v0.nii.gz", "sub02_v0.nii.gz")}
    assert np.all(next(iter(loader))["source_label"].numpy() >= 0)
