"""wandb without an API key: the run is recorded offline in the run folder (scalars, figures,
config) and the end of training says how to ``wandb sync`` it."""

from __future__ import annotations

import time

import pytest

from rdmm_lightning.training import train

from .helpers import tiny_overrides
from .wandb_records import config, history

pytest.importorskip("wandb")


@pytest.mark.slow
def test_wandb_runs_offline_without_an_api_key(tmp_path, monkeypatch, capsys):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train(
        tiny_overrides(
            tmp_path / "data",
            tmp_path / "runs",
            "logger=wandb",
            "model.log_figures=true",
            "trainer.max_epochs=2",
        )
    )
    printed = capsys.readouterr().out
    assert "wandb: recording offline (no W&B API key" in printed
    (offline,) = (result.run_dir / "wandb").glob("offline-run-*")
    assert f"wandb sync {offline}" in printed

    run_file = next(offline.glob("run-*.wandb"))
    for _ in range(50):  # the wandb service may still be flushing the file after finish()
        rows = history(run_file)
        if any("val/dice" in row for row in rows):
            break
        time.sleep(0.2)
    logged = {key for row in rows for key in row}
    assert {"train/loss", "val/dice", "val/loss", "epoch"} <= logged
    assert sum("val/dice" in row for row in rows) == 2
    images = [row for row in rows if row.get("val/overview/_type") == "images/separated"]
    assert len(images) == 2  # one validation figure per epoch
    for row in images:
        (name,) = row["val/overview/filenames"]
        assert (offline / "files" / name).is_file() and name.endswith(".png")
    settings = config(run_file)
    assert settings["config"]["name"] == "quickstart"  # the resolved training config
    assert settings["config"]["model"]["model"] == "rdmm"
    assert settings["model"] == "rdmm"  # and the module's hyper-parameters
