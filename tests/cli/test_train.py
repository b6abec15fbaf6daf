"""``rdmm train``: the same entry point as ``python train.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rdmm_lightning.cli.main import main
from tests.training.helpers import REPO, tiny_overrides


def test_help_lists_the_config_groups(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("experiment", "oai_rdmm_net", "ddp_cpu", "wandb", "ckpt_path="):
        assert word in out


def test_errors_are_one_line_with_exit_code_2(capsys):
    assert main(["train", "experiment=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rdmm train: error: unknown experiment 'nope'") and "\n" not in err
    assert main(["train", "trainer.max_epoch=2"]) == 2
    assert "did you mean 'max_epochs'?" in capsys.readouterr().err


def test_cfg_prints_the_composed_config(capsys):
    assert main(["train", "--cfg", "experiment=synth2d_svf_net", "trainer.max_epochs=3"]) == 0
    cfg = OmegaConf.create(capsys.readouterr().out)
    assert cfg.name == "synth2d_svf_net" and cfg.model.model == "svf"
    assert cfg.trainer.max_epochs == 3


def test_hydra_options_are_passed_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--cfg", "job", "--resolve", "trainer.max_epochs=3"]) == 0
    assert OmegaConf.create(capsys.readouterr().out).trainer.max_epochs == 3
    assert main(["train", "--info", "searchpath"]) == 0
    assert "pkg://rdmm_lightning.configs" in capsys.readouterr().out
    assert main(["train", "-m", "model.lr=1e-3,-1", "trainer.max_steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rdmm train: error: job 1 (model.lr=-1): model.lr=-1 must be > 0"
    assert not list(tmp_path.iterdir())  # checked before job 0 started


def test_a_sweep_and_hydra_run_dir(tmp_path, capsys):
    tiny = tiny_overrides(tmp_path / "data", tmp_path / "runs", "trainer.max_steps=1")
    assert main(["train", "-m", "seed=1,2", *tiny]) == 0
    (stamp,) = (tmp_path / "runs" / "quickstart").iterdir()
    assert sorted(p.parent.name for p in stamp.glob("*/last.ckpt")) == ["0", "1"]
    assert main(["train", *tiny, f"hydra.run.dir={tmp_path / 'mine'}"]) == 0
    assert (tmp_path / "mine" / "last.ckpt").is_file()
    capsys.readouterr()


def test_trains_and_prints_the_infer_command(tmp_path, capsys):
    assert main(["train", *tiny_overrides(tmp_path / "data", tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "rdmm infer --checkpoint" in out
    assert list((tmp_path / "runs" / "quickstart").glob("*/best.ckpt"))


@pytest.mark.slow
def test_train_py_runs_from_another_directory(tmp_path):
    """``python /path/to/train.py`` works from any folder; the paths stay relative to it."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg", "job", "paths.root=here"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert OmegaConf.create(proc.stdout).paths.root == "here"
    assert not list(Path(tmp_path).iterdir())  # --cfg writes nothing
