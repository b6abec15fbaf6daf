"""The elapsed-time callback: wall minutes in the CSV log, continued across a resume."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from rdmm_lightning.training import train
from rdmm_lightning.training.callbacks import ElapsedTime

from .helpers import tiny_overrides

KEY = "time/elapsed_min"


def _elapsed(run_dir: Path) -> list[float]:
    rows = []
    for path in sorted(run_dir.rglob("metrics.csv")):
        with open(path, newline="") as f:
            rows += [float(r[KEY]) for r in csv.DictReader(f) if r.get(KEY)]
    return rows


def test_elapsed_minutes_are_logged_and_continue_after_a_resume(tmp_path):
    overrides = tiny_overrides(tmp_path / "data", tmp_path / "runs", "logger=csv")
    overrides = [o for o in overrides if o != "callbacks=none"] + ["callbacks=default"]
    first = train(overrides)
    before = _elapsed(first.run_dir)
    assert before and all(b >= a for a, b in zip(before, before[1:])) and before[-1] > 0
    ckpt = torch.load(first.last_checkpoint, map_location="cpu", weights_only=True)
    keys = [k for k in ckpt["callbacks"] if "ElapsedTime" in k]
    assert len(keys) == 1 and ckpt["callbacks"][keys[0]]["minutes"] >= before[-1]
    # the resumed clock continues from the stored minutes: set them to 1000 (a fresh clock,
    # the wrong variant, would log a few seconds)
    ckpt["callbacks"][keys[0]]["minutes"] = 1000.0
    edited = first.run_dir / "edited.ckpt"
    torch.save(ckpt, edited)
    resumed = train([f"ckpt_path={edited}", "trainer.max_epochs=2"])
    after = _elapsed(resumed.run_dir)[len(before) :]
    assert after and 1000.0 <= min(after) < 1001.0


def test_a_fresh_callback_starts_at_zero_and_loads_its_state():
    cb = ElapsedTime()
    assert cb.minutes() == 0.0
    cb.load_state_dict({"minutes": 2.5})
    assert cb.minutes() == 2.5
