"""Tiny in-process trainings: run folder, config in checkpoints, init_from, resume, bad inputs."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback

from rdmm_lightning.models import RegistrationNetModule, load_registration_checkpoint
from rdmm_lightning.models.checkpoint import read_checkpoint
from rdmm_lightning.training import (
    CONFIG_KEY,
    OVERRIDES_KEY,
    TrainingConfigError,
    compose_train_config,
    run_training,
    train,
)
from rdmm_lightning.training.weights import init_weights

from .helpers import tiny_overrides
from .probe import weight_sum


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth2d")


@pytest.fixture(scope="module")
def first_run(data_dir, tmp_path_factory):
    """One tiny RDMM-net run (1 epoch, 2 steps), shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    return train(tiny_overrides(data_dir, root, "model.log_figures=true", "logger=csv"))


def start_of(probe_dir: Path) -> dict:
    return json.loads((probe_dir / "start.json").read_text())


def probe(out: Path) -> list[str]:
    return [
        "+callbacks.probe._target_=tests.training.probe.StepMarker",
        f"+callbacks.probe.out={out}",
    ]


def test_run_folder_checkpoints_and_config(first_run, capsys):
    run_dir = first_run.run_dir
    assert run_dir.parent.name == "quickstart" and run_dir.parent.parent.name.startswith("runs")
    assert first_run.best_checkpoint == run_dir / "best.ckpt"
    assert first_run.last_checkpoint == run_dir / "last.ckpt"
    assert first_run.monitor == "val/dice" and 0 <= first_run.best_score <= 1
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.paths.run_dir == str(run_dir) and saved.name == "quickstart"
    assert "logger=csv" in OmegaConf.load(run_dir / "overrides.yaml")
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = read_checkpoint(run_dir / name)  # weights_only=True
        assert ckpt[CONFIG_KEY] == OmegaConf.to_container(saved)
        assert "logger=csv" in ckpt[OVERRIDES_KEY]
    module = load_registration_checkpoint(run_dir / "best.ckpt", "rdmm")
    assert isinstance(module, RegistrationNetModule)
    # the data module's spatial preprocessing travels with the checkpoint, for `rdmm infer`
    pre = saved.data.preprocessing
    assert module.preprocessing is not None
    assert module.preprocessing.canonical == pre.get("canonical", True)
    assert list(module.preprocessing.resize_shape) == list(pre.resize_shape)
    assert list((run_dir / "csv" / "version_0" / "figures").glob("*.png"))
    assert (run_dir / "csv" / "version_0" / "metrics.csv").is_file()
    assert not list(run_dir.glob(".*.tmp-*"))


def test_infer_command_names_a_real_validation_pair(first_run):
    words = shlex.split(first_run.infer_command)
    assert words[:3] == ["rdmm", "infer", "--checkpoint"]
    assert Path(words[3]).resolve() == first_run.best_checkpoint
    source, target = words[4:6]
    assert "val" in source and Path(source).is_file() and Path(target).is_file()
    assert words[words.index("--out") + 1].endswith("infer_example")
    assert Path(words[words.index("--source-label") + 1]).is_file()


def test_init_from_loads_weights_and_starts_at_epoch_zero(first_run, data_dir, tmp_path):
    best = first_run.best_checkpoint
    result = train(
        tiny_overrides(data_dir, tmp_path, f"init_from={best}", "seed=123", *probe(tmp_path / "p"))
    )
    start = start_of(tmp_path / "p")
    assert start["epoch"] == 0 and start["step"] == 0
    assert start["weights"] == pytest.approx(weight_sum(read_checkpoint(best)["state_dict"]))
    last = read_checkpoint(result.last_checkpoint)
    assert last["epoch"] == 0 and last["global_step"] == 2
    assert result.run_dir != first_run.run_dir


def test_init_from_another_model_is_refused_before_training(first_run, data_dir, tmp_path):
    overrides = tiny_overrides(
        data_dir, tmp_path, "model=svf_net", f"init_from={first_run.best_checkpoint}"
    )
    with pytest.raises(TrainingConfigError, match="init_from: the checkpoint holds a 'rdmm' model"):
        train(overrides)
    assert not (tmp_path / "quickstart").exists()  # nothing was started


def test_init_from_non_strict_loads_the_matching_weights(first_run):
    svf = RegistrationNetModule(model="svf", image_shape=(32, 32), features=(4, 8))
    notes = init_weights(svf, first_run.best_checkpoint, strict=False)
    state = read_checkpoint(first_run.best_checkpoint)["state_dict"]
    for key, value in svf.state_dict().items():
        if key.startswith("net.momentum_net"):
            assert torch.equal(value, state[key])
    assert any("skipped" in n and "weights the model does not have" in n for n in notes)


def test_resume_continues_and_matches_an_uninterrupted_run(data_dir, tmp_path):
    seeded = ("seed=7", "trainer.deterministic=true")
    full = train(
        tiny_overrides(
            data_dir, tmp_path / "a", *seeded, "trainer.max_epochs=2", *probe(tmp_path / "f")
        )
    )
    first = train(tiny_overrides(data_dir, tmp_path / "b", *seeded, *probe(tmp_path / "p")))
    resumed = train([f"ckpt_path={first.last_checkpoint}", "trainer.max_epochs=2"])
    assert resumed.run_dir == first.run_dir  # the stored overrides and run folder are reused
    start = start_of(tmp_path / "p")
    assert start["epoch"] == 1 and start["step"] == 2
    last = read_checkpoint(resumed.last_checkpoint)
    assert last["epoch"] == 1 and last["global_step"] == 4
    reference = read_checkpoint(full.last_checkpoint)["state_dict"]
    for key, value in last["state_dict"].items():
        assert torch.equal(value, reference[key]), key
    # the steps drew the same random numbers as in the uninterrupted run (StepSeeds)
    draws = [json.loads((tmp_path / d / "draws.json").read_text()) for d in ("f", "p")]
    assert set(draws[1]) == {"1/0", "1/1"} and draws[1] == {k: draws[0][k] for k in draws[1]}


def test_resume_of_a_moved_run_folder_writes_there(first_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(first_run.run_dir, moved)
    resumed = train([f"ckpt_path={moved / 'last.ckpt'}", "trainer.max_epochs=2"])
    assert resumed.run_dir == moved
    assert read_checkpoint(moved / "last.ckpt")["epoch"] == 1
    assert read_checkpoint(first_run.run_dir / "last.ckpt")["epoch"] == 0


class EpochScore(Callback):
    """Logs ``probe/epoch`` = the epoch number after each validation: monitored with
    ``mode=min`` it makes the first epoch the best one, whatever the losses do."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("probe/epoch", float(trainer.current_epoch))


def test_test_pairs_are_evaluated_with_the_best_checkpoint(data_dir, tmp_path):
    """Two epochs, best = epoch 0 (``probe/epoch``, min), last = epoch 1: the test metrics are
    those of best.ckpt's weights, not of the last ones."""
    result = train(
        tiny_overrides(
            data_dir,
            tmp_path,
            "test=true",
            "trainer.max_epochs=2",
            f"+callbacks.epoch_score._target_={__name__}.EpochScore",
            "checkpoint.monitor=probe/epoch",
            "checkpoint.mode=min",
        )
    )
    metrics = {k: float(v) for k, v in result.trainer.callback_metrics.items()}
    assert "test/dice" in metrics and "test/loss" in metrics
    best, last = read_checkpoint(result.best_checkpoint), read_checkpoint(result.last_checkpoint)
    assert (best["epoch"], last["epoch"]) == (0, 1) and result.best_score == 0.0
    best_sum, last_sum = weight_sum(best["state_dict"]), weight_sum(last["state_dict"])
    assert best_sum != last_sum
    # the module was tested with best.ckpt's weights
    assert weight_sum(result.module.state_dict()) == best_sum
    # and the logged test metrics are those of best.ckpt, not of last.ckpt
    scores = {}
    for name, path in (("best", result.best_checkpoint), ("last", result.last_checkpoint)):
        (out,) = result.trainer.test(
            result.module, result.datamodule, ckpt_path=str(path), verbose=False
        )
        scores[name] = out
    print("test metrics:", metrics, "\nbest:", scores["best"], "\nlast:", scores["last"])
    for key in ("test/loss", "test/dice"):
        assert metrics[key] == pytest.approx(scores["best"][key], rel=1e-6, abs=1e-9), key
    assert abs(scores["best"]["test/loss"] - scores["last"]["test/loss"]) > 1e-4


def test_resume_checks_the_checkpoint_first(first_run, data_dir, tmp_path):
    with pytest.raises(TrainingConfigError, match="ckpt_path: checkpoint not found"):
        compose_train_config([f"ckpt_path={tmp_path / 'none.ckpt'}"])
    with pytest.raises(TrainingConfigError, match="ckpt_path: the checkpoint holds a 'rdmm'"):
        train([f"ckpt_path={first_run.last_checkpoint}", "model=svf_net"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder", "data.pool=/no/such/folder"], "data: pool: not found: /no/such/folder"),
        (["data=ixi", "data.data_dir=/no/such/ixi"], "data: data_dir: folder not found"),
        (["init_from=/no/such.ckpt"], "init_from: file not found: /no/such.ckpt"),
    ],
)
def test_missing_paths_fail_before_anything_starts(tmp_path, overrides, message):
    if overrides[0] == "data=ixi":
        overrides = [*overrides, "model.image_shape=[96,128,128]", "model=svf_net"]
    if overrides[0] == "data=folder":
        overrides = [*overrides, "data.preprocessing.resize_shape=[64,64]"]
    with pytest.raises(TrainingConfigError, match=message.replace(".", r"\.")):
        run_training(compose_train_config([*overrides, f"paths.root={tmp_path}"]))
    assert not list(tmp_path.iterdir())
