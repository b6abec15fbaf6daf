"""Run folders: timestamps, the folder shared with DDP ranks, launcher-named folders."""

from __future__ import annotations

import os
import re

from rdmm_lightning.training.rundir import (
    RUN_DIR_ENV,
    display_path,
    exported_run_dir,
    launcher_run_name,
    resolve_run_dir,
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
