"""``trainer=ddp_cpu``: two gloo processes started by ``python train.py`` train on disjoint pairs,
stay in sync, reduce their metrics, and only rank 0 writes checkpoints and logs."""

from __future__ import annotations

import json

import pytest
import torch

from rdmm_lightning.models.checkpoint import read_checkpoint

from .helpers import run_train_script, tiny_overrides


@pytest.mark.slow
@pytest.mark.ddp
def test_two_cpu_ranks(tmp_path):
    out = tmp_path / "probe"
    args = tiny_overrides(
        tmp_path / "data",
        tmp_path / "runs",
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "data.synthetic_options.num_train=8",  # 4 pairs = 2 batches per rank and epoch
        "data.synthetic_options.num_val=4",  # 2 pairs = 1 batch per rank
        "logger=csv",
        "+callbacks.probe._target_=tests.training.probe.DDPProbe",
        f"+callbacks.probe.out={out}",
    )
    proc = run_train_script(args, cwd=tmp_path)
    log, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, log
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["is_global_zero"] for r in ranks] == [True, False]

    for epoch in ("0", "1"):  # disjoint shares that cover the epoch's 8 pairs
        shares = [{tuple(p) for p in r["pairs"][epoch]} for r in ranks]
        assert len(shares[0]) == len(shares[1]) == 4 and not shares[0] & shares[1]

    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(weights[0], weights[1])

    sums = [sum(v * n for v, n in r["val_losses"]) for r in ranks]
    count = [sum(n for _, n in r["val_losses"]) for r in ranks]
    assert sums[0] / count[0] != pytest.approx(sums[1] / count[1])  # different pairs per rank
    expected = sum(sums) / sum(count)
    for name in ("val/loss", "val/dice"):
        assert ranks[0]["metrics"][name] == ranks[1]["metrics"][name]
    assert ranks[0]["metrics"]["val/loss"] == pytest.approx(expected, rel=1e-5)

    (run_dir,) = (tmp_path / "runs" / "quickstart").iterdir()  # one run folder for both ranks
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["best.ckpt", "config.yaml", "csv", "last.ckpt", "overrides.yaml"]
    assert [p.name for p in (run_dir / "csv").iterdir()] == ["version_0"]
    assert read_checkpoint(run_dir / "last.ckpt")["global_step"] == 4
    assert "Try the model on a validation pair" in log


@pytest.mark.slow
@pytest.mark.ddp
def test_a_sweep_of_ddp_runs_through_rdmm_train(tmp_path):
    """``rdmm train -m seed=1,2 trainer=ddp_cpu``: each job starts its own two ranks (the
    sub-processes re-run ``rdmm train`` with the job's overrides) in the job's folder."""
    args = tiny_overrides(tmp_path / "data", tmp_path / "runs", "trainer=ddp_cpu")
    command = ["-m", "rdmm_lightning.cli.main", "train", "-m", "seed=1,2", *args]
    proc = run_train_script([*command, "trainer.max_steps=1"], cwd=tmp_path, module=True)
    log, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, log
    (stamp,) = (tmp_path / "runs" / "quickstart").iterdir()  # one sweep folder, no other
    assert sorted(p.name for p in stamp.iterdir()) == ["0", "1", "multirun.yaml"]
    for job, seed in (("0", 1), ("1", 2)):
        names = sorted(p.name for p in (stamp / job).iterdir())
        assert names == ["best.ckpt", "config.yaml", "last.ckpt", "overrides.yaml"]
        ckpt = read_checkpoint(stamp / job / "last.ckpt")
        assert ckpt["global_step"] == 1 and ckpt["rdmm_config"]["seed"] == seed
    assert log.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2
