"""benchmarks/ixi_net.py --stages checkpoints: evaluation of given nets, as the brain models'
table is made, on one generated 2D pair with the shipped quickstart model."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from benchmarks import ixi_net


@pytest.fixture
def synth_pair(tmp_path):
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "rdmm_lightning.cli.main", "data", "synth2d", "--out", str(data),
         "--pairs", "1", "--size", "64", "--threads", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.copy(data / "pairs.csv", data / "pairs_eval.csv")
    return data


def test_checkpoints_stage_rows_without_and_with_refinement(synth_pair, tmp_path, capsys):
    ixi_net.main(
        ["--stages", "checkpoints", "--data", str(synth_pair), "--root", str(tmp_path / "root"),
         "--checkpoint", "rdmm-net=synth2d-rdmm-net", "--refine-steps", "2", "--pairs", "1",
         "--threads", "1", "--affine", "none"],
    )  # fmt: skip
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| affine")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| affine none + rdmm-net",
        "| affine none + rdmm-net + 2 refine steps",
    ]
    for row in rows:
        dice = float(row.split(" | ")[1].split(" ± ")[0])
        assert 0.0 < dice <= 1.0
    assert (tmp_path / "root" / "eval" / "rdmm-net_none_refine2" / "summary.json").is_file()


def test_checkpoints_stage_num_steps_is_passed_and_named(synth_pair, tmp_path, capsys):
    ixi_net.main(
        ["--stages", "checkpoints", "--data", str(synth_pair), "--root", str(tmp_path / "root"),
         "--checkpoint", "rdmm-net=synth2d-rdmm-net", "--refine-steps", "0", "--pairs", "1",
         "--threads", "1", "--affine", "none", "--num-steps", "3"],
    )  # fmt: skip
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| affine")]
    assert [r.split(" | ")[0] for r in rows] == ["| affine none + rdmm-net (K=3)"]
    summary = tmp_path / "root" / "eval" / "rdmm-net_none_k3_refine0" / "summary.json"
    assert '"num_steps": 3' in summary.read_text()


def test_interleaved_rows_match_the_row_by_row_ones(synth_pair, tmp_path, capsys):
    """--interleave runs every row on pair 1, then on pair 2; same rows, same Dice (the
    registrations are deterministic), and the time ratio of the rows on stderr."""
    common = ["--stages", "checkpoints", "--data", str(synth_pair), "--checkpoint",
              "rdmm-net=synth2d-rdmm-net", "--refine-steps", "2", "--pairs", "1", "--threads",
              "1", "--affine", "none"]  # fmt: skip
    ixi_net.main([*common, "--root", str(tmp_path / "a")])
    plain = capsys.readouterr().out
    ixi_net.main([*common, "--root", str(tmp_path / "b"), "--interleave"])
    captured = capsys.readouterr()

    def dice(out):
        rows = [line for line in out.splitlines() if line.startswith("| affine")]
        return [(r.split(" | ")[0], r.split(" | ")[1]) for r in rows]

    assert dice(captured.out) == dice(plain) and len(dice(plain)) == 2
    assert "pair 1/1 affine none + rdmm-net: Dice" in captured.err
    assert "time ratio, interleaved: affine none + rdmm-net / " in captured.err
    assert (tmp_path / "b" / "eval" / "rdmm-net_none_refine2" / "pair_001").is_dir()


def test_checkpoint_spec_must_name_a_label(synth_pair, tmp_path):
    with pytest.raises(SystemExit, match="LABEL=CKPT"):
        ixi_net.main(
            ["--stages", "checkpoints", "--data", str(synth_pair), "--root", str(tmp_path),
             "--checkpoint", "synth2d-rdmm-net"],
        )  # fmt: skip
