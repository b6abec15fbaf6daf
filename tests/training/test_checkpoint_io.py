"""Atomic checkpoint writes: a failed or killed writer never leaves a partial checkpoint."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from rdmm_lightning.training import AtomicCheckpointIO, atomic_torch_save


def test_save_and_load_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(3.0)}, "epoch": 2}, path)
    loaded = io.load_checkpoint(path, weights_only=True)
    assert loaded["epoch"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_stale_temporary_files_are_removed(tmp_path):
    stale = tmp_path / ".last.ckpt.tmp-999999"
    stale.write_bytes(b"left by a killed writer")
    atomic_torch_save({"epoch": 3}, tmp_path / "last.ckpt")
    assert not stale.exists()


WRITER = """
import sys, torch
from rdmm_lightning.training import atomic_torch_save
big = torch.zeros(2_000_000)
n = 0
while True:
    n += 1
    atomic_torch_save({"n": n, "w": big + n}, sys.argv[1])
    print(n, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_writes_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(3):  # let it complete a few writes, then kill it mid-way through another
            assert proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["n"] >= 3 and bool((ckpt["w"] == ckpt["n"]).all())
