"""One short training epoch through every data preset (configs/data/*.yaml) whose data is at
hand, with the real RDMM-net and the real entry point (:func:`rdmm_lightning.training.train`).

synth2d and synth3d are generated into temporary folders by the presets themselves (tiny:
48^2 shapes resized to 32^2, 16^3 phantoms); oai and folder run on the synth3d phantoms (the
OAI stand-in: pool.csv with sides, labeled evaluation pairs with sides); ixi runs on
../shared/data/ixi (skipped when absent) resized to 24x32x32. Each run: a couple of training
pairs, one validation batch, a CSV logger, no progress bar.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datamodules.synthetic import MANIFEST, prepare_synthetic
from rdmm_lightning.models import RegistrationNetModule
from rdmm_lightning.models.checkpoint import read_checkpoint
from rdmm_lightning.training import TrainResult, train

from .helpers import tiny_overrides

IXI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ixi"

SHAPE3D = [16, 16, 16]  # the phantoms are generated on the training grid
SYNTH3D_OPTIONS = {
    "train_subjects": 2,  # both knees of each: 4 training volumes
    "eval_subjects": 2,
    "num_val": 1,
    "num_test": 1,
    "shape": SHAPE3D,
}


def _grid(shape: list[int]) -> str:
    return "[" + ",".join(str(n) for n in shape) + "]"


def run_overrides(root: Path, *extra: str) -> list[str]:
    """The model/trainer settings of :func:`tiny_overrides` (tiny RDMM-net, 1 epoch) without its
    synth2d data and image shape, a CSV logger, two training batches, one validation batch."""
    dropped = ("data.", "model.image_shape=", "logger=", "callbacks=")
    common = [o for o in tiny_overrides(root, root) if not o.startswith(dropped)]
    limits = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    return [*common, *limits, "logger=csv", *extra]


def data_3d(preset: str, shape: list[int] = SHAPE3D) -> list[str]:
    """One 3D volume per batch, resized to ``shape``, read in the main process."""
    return [
        f"data={preset}",
        f"++data.preprocessing.resize_shape={_grid(shape)}",  # not a key of every preset
        f"model.image_shape={_grid(shape)}",
        "data.pairs_per_epoch=2",
        "data.batch_size=1",
        "data.num_workers=0",
    ]


def logged_metrics(result: TrainResult) -> dict[str, float]:
    """The last value of every column of the run's metrics.csv."""
    files = list(result.run_dir.glob("csv/version_*/metrics.csv"))
    assert len(files) == 1, files
    values: dict[str, float] = {}
    with open(files[0], newline="") as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def check_one_epoch(result: TrainResult, steps: int, dice: bool) -> dict[str, float]:
    """The epoch finished with ``steps`` optimizer steps and a finite loss, last.ckpt holds it,
    and (``dice``) validation Dice was logged and chose best.ckpt."""
    trainer = result.trainer
    assert trainer.state.finished and trainer.current_epoch == 1
    assert trainer.global_step == steps
    assert isinstance(result.module, RegistrationNetModule) and result.module.model_name == "rdmm"
    loss = float(trainer.callback_metrics["train/loss"])
    assert math.isfinite(loss)
    assert result.last_checkpoint == result.run_dir / "last.ckpt"
    last = read_checkpoint(result.last_checkpoint)
    assert last["epoch"] == 0 and last["global_step"] == steps
    logged = logged_metrics(result)
    assert math.isfinite(logged["train/loss"])
    if dice:
        assert 0.0 <= logged["val/dice"] <= 1.0
        assert result.monitor == "val/dice"
        assert result.best_checkpoint == result.run_dir / "best.ckpt"
        assert result.best_checkpoint.is_file()
        assert result.best_score == pytest.approx(logged["val/dice"])
    return logged


@pytest.fixture(scope="module")
def synth3d_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth3d")


@pytest.fixture
def synth3d_data(synth3d_dir) -> Path:
    """The tiny synth3d set (a no-op when test_synth3d already generated it)."""
    prepare_synthetic("synth3d", synth3d_dir, SYNTH3D_OPTIONS)
    return synth3d_dir


@pytest.mark.slow
def test_synth2d(tmp_path):
    data_dir = tmp_path / "data"
    overrides = tiny_overrides(data_dir, tmp_path / "runs", "trainer.limit_val_batches=1")
    overrides = [o if o != "logger=none" else "logger=csv" for o in overrides]
    result = train(overrides)
    assert OmegaConf.load(result.run_dir / "config.yaml").data.synthetic == "synth2d"
    check_one_epoch(result, steps=2, dice=True)  # 4 pairs in batches of 2
    for split in ("train", "val", "test"):
        assert (data_dir / split / "pairs.csv").is_file()
        assert (data_dir / split / MANIFEST).is_file()


@pytest.mark.slow
def test_synth3d(synth3d_dir, tmp_path):
    options = [
        f"data.synthetic_options.{k}={_grid(v) if isinstance(v, list) else v}"
        for k, v in SYNTH3D_OPTIONS.items()
    ]
    overrides = run_overrides(
        tmp_path,
        *data_3d("synth3d"),
        f"data.data_dir={synth3d_dir}",
        *options,
    )
    result = train(overrides)
    check_one_epoch(result, steps=2, dice=True)
    assert (synth3d_dir / "train" / "pool.csv").is_file()
    assert (synth3d_dir / "eval" / "pairs_val.csv").is_file()
    manifest = json.loads((synth3d_dir / "train" / MANIFEST).read_text())
    assert manifest["options"]["shape"] == SHAPE3D and manifest["options"]["train_subjects"] == 2


@pytest.mark.slow
def test_oai_on_the_synth3d_stand_in(synth3d_data, tmp_path):
    overrides = run_overrides(
        tmp_path,
        *data_3d("oai"),
        f"data.data_dir={synth3d_data}",
        "data.pool=train/pool.csv",
        "data.val_pairs=eval/pairs_val.csv",
        "data.test_pairs=eval/pairs_test.csv",
    )
    result = train(overrides)
    assert result.datamodule.flip_to_side == "right"
    check_one_epoch(result, steps=2, dice=True)


@pytest.mark.slow
def test_folder_without_validation(synth3d_data, tmp_path):
    overrides = run_overrides(
        tmp_path, *data_3d("folder"), f"data.pool={synth3d_data / 'train' / 'images'}"
    )
    result = train(overrides)
    assert len(result.datamodule.train_set.table) == 4
    logged = check_one_epoch(result, steps=2, dice=False)
    assert result.best_checkpoint is None and "val/dice" not in logged  # no val_pairs


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not (IXI / "subjects.csv").is_file(), reason=f"no IXI data at {IXI}")
def test_ixi_rdmm_net_experiment(tmp_path):
    """The ixi_rdmm_net experiment on the CPU at 7.5 mm (24x32x32), without its affine stage."""
    shape = [24, 32, 32]  # 90x120x120 voxels of 2 mm (RAS), resized isotropically
    overrides = run_overrides(
        tmp_path,
        "experiment=ixi_rdmm_net",
        "trainer=cpu",
        f"data.data_dir={IXI}",
        "data.preprocessing.crop_or_pad_shape=null",
        *data_3d("ixi", shape)[1:],
        "model.affine_checkpoint=null",
        "model.solver_method=rk4",
        "trainer.accumulate_grad_batches=1",
        "trainer.check_val_every_n_epoch=1",
    )
    result = train(overrides)
    assert result.run_dir.parent.name == "ixi_rdmm_net"
    check_one_epoch(result, steps=2, dice=True)
