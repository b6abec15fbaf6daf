"""``python train.py`` as a Hydra app: ``--cfg job``, ``--help``, ``--info``, tab completion, ``-m``
sweeps, ``hydra.run.dir``, resume, and one-line errors before anything starts."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rdmm_lightning.models.checkpoint import read_checkpoint
from rdmm_lightning.training import main

from .helpers import tiny_overrides

ONE_STEP = ("trainer.max_steps=1",)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("train.py: error: "), err
    return err


def test_cfg_job_prints_the_composed_config_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--cfg", "job", "trainer.max_epochs=7", "model=svf_net"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.trainer.max_epochs == 7 and printed.model.model == "svf"
    assert printed.name == "quickstart" and "hydra" not in printed
    assert main(["--cfg", "job", "--resolve", "paths.root=here", "logger=csv"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.logger.csv.save_dir is None  # ${paths.run_dir} resolved (set by the run)
    assert main(["--cfg", "hydra"]) == 0
    assert "rdmm_run_dir:run" in capsys.readouterr().out  # where run folders come from
    assert files_under(tmp_path) == []


def test_help_info_and_shell_completion(capsys, monkeypatch):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("--cfg job", "-m, --multirun", "--threads N", "experiment: ", "oai_rdmm_net"):
        assert word in out, word
    assert main(["--info", "searchpath"]) == 0
    assert "pkg://rdmm_lightning.configs" in capsys.readouterr().out
    monkeypatch.setenv("COMP_LINE", "python train.py experiment=oai_r")
    assert main(["-sc", "query=bash"]) == 0
    assert capsys.readouterr().out.split() == ["experiment=oai_rdmm_net"]
    monkeypatch.setenv("COMP_LINE", "python train.py trainer.max_ep")
    assert main(["-sc", "query=bash"]) == 0
    assert capsys.readouterr().out.split() == ["trainer.max_epochs="]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.max_epoch=3"], "unknown config key 'trainer.max_epoch'"),
        (["model.lr=-1e-3"], "model.lr=-0.001 must be > 0"),
        (["experiment=nope"], "unknown experiment 'nope'"),
        (["model.omt_weight=0.05,0.1"], "a sweep needs -m"),
        (["-m", "model.lr=1e-3,-1"], "job 1 (model.lr=-1): model.lr=-1 must be > 0"),
        (["-m", "model.omt_weight=0.1,abc"], "job 1 (model.omt_weight=abc): model: could not"),
        (["data=folder", "data.pool=/no/such", "data.preprocessing.resize_shape=[64,64]"], "pool"),
    ],
)
def test_bad_overrides_are_one_line_and_nothing_is_written(
    overrides, expected, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main([*overrides, "trainer.max_steps=1", "logger=none"]) == 2
    assert expected in one_error_line(capsys)
    assert files_under(tmp_path) == []  # no run folder, not even for job 0 of the sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``-m model.omt_weight=0.05,0.1`` with one training step per job."""
    tmp = tmp_path_factory.mktemp("sweep")
    args = ["-m", "model.omt_weight=0.05,0.1", *tiny_overrides(tmp / "data", tmp / "runs")]
    assert main([*args, *ONE_STEP]) == 0
    return tmp / "runs"


def test_a_sweep_writes_one_run_folder_per_value(sweep):
    (stamp,) = (sweep / "quickstart").iterdir()  # <root>/<name>/<timestamp>/<job number>
    jobs = sorted(p.name for p in stamp.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, weight in zip(jobs, (0.05, 0.1)):
        run = stamp / job
        assert OmegaConf.load(run / "config.yaml").model.omt_weight == weight
        assert OmegaConf.load(run / "config.yaml").paths.run_dir == str(run)
        assert f"model.omt_weight={weight}" in OmegaConf.load(run / "overrides.yaml")
        ckpt = read_checkpoint(run / "last.ckpt")
        assert ckpt["global_step"] == 1
        assert ckpt["rdmm_config"]["model"]["omt_weight"] == weight


def test_resuming_a_sweep_job_continues_in_its_folder(sweep, capsys):
    (job,) = [p for p in (sweep / "quickstart").glob("*/1")]
    folders = sorted(p for p in sweep.rglob("*") if p.is_dir())
    resume = [f"ckpt_path={job / 'last.ckpt'}", "trainer.max_steps=2", "trainer.max_epochs=2"]
    assert main(resume) == 0
    assert sorted(p for p in sweep.rglob("*") if p.is_dir()) == folders  # no new run folder
    ckpt = read_checkpoint(job / "last.ckpt")
    assert ckpt["global_step"] == 2 and ckpt["rdmm_config"]["model"]["omt_weight"] == 0.1
    assert "trainer.max_steps=2" in OmegaConf.load(job / "overrides.yaml")


def test_hydra_run_dir_is_honoured(tmp_path, capsys):
    mine = tmp_path / "mine"
    overrides = tiny_overrides(tmp_path / "data", tmp_path / "runs", *ONE_STEP)
    assert main([*overrides, f"hydra.run.dir={mine}"]) == 0
    assert {"config.yaml", "overrides.yaml", "last.ckpt"} <= set(files_under(mine))
    assert OmegaConf.load(mine / "config.yaml").paths.run_dir == str(mine)
    assert not (tmp_path / "runs").exists()  # paths.root is not used
    assert f"Run folder: {mine}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("lr", "reason"),
    [
        ("1e2", "the last 2 updates (from step 1) had no finite loss"),
        ("1e30", "the networks' outputs on validation batch 0 are not finite"),
    ],
)
def test_a_diverged_training_is_one_line_and_exit_code_1(lr, reason, tmp_path, monkeypatch, capsys):
    """An absurd learning rate makes every loss after the first update non-finite (1e2: NaN
    losses; 1e30: the momentum itself overflows): the run stops with one line naming the run
    folder, exit code 1, and keeps its folder."""
    from rdmm_lightning.models import RegistrationModuleBase

    monkeypatch.setattr(RegistrationModuleBase, "max_consecutive_skipped_steps", 2)
    args = tiny_overrides(tmp_path / "data", tmp_path / "runs", f"model.lr={lr}")
    assert main([*args, "trainer.max_epochs=4"]) == 1
    err = one_error_line(capsys)
    assert err.startswith("train.py: error: training diverged at step ") and reason in err
    (run,) = (tmp_path / "runs" / "quickstart").iterdir()
    assert str(run) in err
