"""A training killed with SIGKILL in the middle of an epoch resumes from ``last.ckpt`` and ends
with the same weights as an uninterrupted run (seeded, deterministic, CPU)."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from rdmm_lightning.models.checkpoint import read_checkpoint
from rdmm_lightning.training import train

from .helpers import run_train_script, tiny_overrides

SETTINGS = (
    "data.synthetic_options.num_train=8",  # 4 steps per epoch
    "trainer.max_epochs=3",
    "seed=7",
    "trainer.deterministic=true",
    "+callbacks.probe._target_=tests.training.probe.StepMarker",
)


def _wait_for(predicate, proc, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _progress(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data, probe = tmp_path / "data", tmp_path / "probe"
    args = tiny_overrides(data, tmp_path / "killed", *SETTINGS, f"+callbacks.probe.out={probe}")
    proc = run_train_script([*args, "+callbacks.probe.delay=0.3"], cwd=tmp_path)
    try:
        _wait_for(lambda: _progress(probe / "progress.json").get("epoch") == 1, proc)
        _wait_for(lambda: _progress(probe / "progress.json").get("batch", 0) >= 1, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (run_dir,) = (tmp_path / "killed" / "quickstart").iterdir()
    saved = read_checkpoint(run_dir / "last.ckpt")
    assert saved["epoch"] == 0 and saved["global_step"] == 4

    resumed = train([f"ckpt_path={run_dir / 'last.ckpt'}", "+callbacks.probe.delay=0"])
    start = json.loads((probe / "start.json").read_text())
    assert (start["epoch"], start["step"]) == (1, 4)
    final = read_checkpoint(resumed.last_checkpoint)
    assert resumed.run_dir == run_dir and final["epoch"] == 2 and final["global_step"] == 12

    probe2 = f"+callbacks.probe.out={tmp_path / 'p2'}"
    uninterrupted = train(tiny_overrides(data, tmp_path / "full", *SETTINGS, probe2))
    reference = read_checkpoint(uninterrupted.last_checkpoint)["state_dict"]
    for key, value in final["state_dict"].items():
        assert torch.equal(value, reference[key]), key
