"""Run folders: timestamps, the folder shared with DDP ranks, launcher-named folders, and the
same rules behind the Hydra app's ``hydra.run.dir`` / ``hydra.sweep.dir``."""

from __future__ import annotations

import os
import re

from hydra.types import RunMode
from omegaconf import OmegaConf

from rdmm_lightning.training.rundir import (
    RUN_DIR_ENV,
    display_path,
    exported_run_dir,
    hydra_run_dir,
    launcher_run_name,
    resolve_run_dir,
    resume_folder,
    run_name,
)

STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(_\d+)?")


def _clear_launchers(monkeypatch):
    for key in (
        "TORCHELASTIC_RUN_ID",
        "WORLD_SIZE",
        "SLURM_JOB_ID",
        "SLURM_NTASKS",
        "SLURM_STEP_ID",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)


def test_new_timestamped_folders_never_collide(tmp_path, monkeypatch):
    _clear_launchers(monkeypatch)
    folders = [resolve_run_dir(str(tmp_path), "exp") for _ in range(3)]
    assert len(set(folders)) == 3
    for folder in folders:
        assert folder.is_dir() and folder.parent == tmp_path / "exp"
        assert STAMP.fullmatch(folder.name)


def test_relative_root_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    _clear_launchers(monkeypatch)
    monkeypatch.chdir(tmp_path)
    folder = resolve_run_dir("checkpoints", "exp")
    assert folder.is_absolute() and folder.parent == tmp_path / "checkpoints" / "exp"
    assert display_path(folder).startswith("checkpoints/exp/")
    assert os.getcwd() == str(tmp_path)


def test_explicit_and_exported_folders(tmp_path, monkeypatch):
    _clear_launchers(monkeypatch)
    explicit = resolve_run_dir(str(tmp_path), "exp", str(tmp_path / "mine"))
    assert explicit == tmp_path / "mine" and explicit.is_dir()
    with exported_run_dir(explicit):
        assert resolve_run_dir(str(tmp_path), "other") == explicit  # what DDP ranks see
    assert RUN_DIR_ENV not in os.environ


def test_launcher_names_are_shared_by_all_ranks(tmp_path, monkeypatch):
    _clear_launchers(monkeypatch)
    assert launcher_run_name() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launcher_run_name() == "torchrun-abc"
    assert resolve_run_dir(str(tmp_path), "exp") == tmp_path / "exp" / "torchrun-abc"
    _clear_launchers(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert launcher_run_name() is None  # the batch script itself: one process
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert launcher_run_name() == "slurm-77-3"  # every task of an srun step


def _hydra_config(root, mode, **top):
    """A composed config's parts that ``hydra.run.dir`` / ``hydra.sweep.dir`` read."""
    return OmegaConf.create(
        {
            "name": None,
            "ckpt_path": None,
            **top,
            "paths": {"root": str(root), "run_dir": None},
            "hydra": {"mode": mode, "runtime": {"choices": {"experiment": "exp", "model": "m"}}},
        }
    )


def test_hydra_run_dirs_follow_the_same_rules(tmp_path, monkeypatch):
    _clear_launchers(monkeypatch)
    first, second = (_hydra_config(tmp_path, RunMode.RUN) for _ in range(2))
    dirs = [hydra_run_dir("run", _root_=c) for c in (first, second)]
    # a new folder per config, made at once: two runs started in the same second never share one
    assert dirs[0] != dirs[1] and all(os.path.isdir(d) for d in dirs)
    for d in dirs:
        assert os.path.dirname(d) == str(tmp_path / "exp") and STAMP.fullmatch(os.path.basename(d))
    assert hydra_run_dir("run", _root_=first) == dirs[0]  # cached: later look-ups agree
    # --cfg/--info (no run mode) create nothing
    shown = hydra_run_dir("run", _root_=_hydra_config(tmp_path / "shown", None))
    assert not os.path.exists(shown) and not (tmp_path / "shown").exists()
    # the same rules as resolve_run_dir: explicit folder, then $RDMM_RUN_DIR, name, launcher
    explicit = _hydra_config(tmp_path, RunMode.RUN, name="mine")
    explicit.paths.run_dir = str(tmp_path / "here")
    assert hydra_run_dir("run", _root_=explicit) == str(tmp_path / "here")
    with exported_run_dir(tmp_path / "exported"):
        assert hydra_run_dir("run", _root_=_hydra_config(tmp_path, RunMode.RUN)) == str(
            tmp_path / "exported"
        )
    named = hydra_run_dir("sweep", _root_=_hydra_config(tmp_path, RunMode.MULTIRUN, name="n"))
    assert os.path.dirname(named) == str(tmp_path / "n") and os.path.isdir(named)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ranks = [hydra_run_dir("run", _root_=_hydra_config(tmp_path, RunMode.RUN)) for _ in range(2)]
    assert ranks == [str(tmp_path / "exp" / "torchrun-abc")] * 2


def test_a_resumed_run_uses_the_checkpoint_folder(tmp_path, monkeypatch):
    _clear_launchers(monkeypatch)
    run = tmp_path / "exp" / "2020-01-01_00-00-00"
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(b"")
    cfg = _hydra_config(tmp_path, RunMode.RUN, ckpt_path=str(run / "last.ckpt"))
    assert resume_folder(run / "last.ckpt") is None  # not a run folder without config.yaml
    assert hydra_run_dir("run", _root_=cfg) != str(run)
    (run / "config.yaml").write_text("name: exp\n")
    assert resume_folder(run / "last.ckpt") == run
    cfg = _hydra_config(tmp_path, RunMode.RUN, ckpt_path=str(run / "last.ckpt"))
    assert hydra_run_dir("run", _root_=cfg) == str(run)
    assert run_name(None, {"experiment": None, "model": "svf_net"}) == "svf_net"
    assert run_name("given", {"experiment": "exp"}) == "given"
