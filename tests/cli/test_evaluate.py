"""``rdmm evaluate`` end to end on tiny 2D pairs: a pairwise optimiser (a few iterations) and an
untrained network checkpoint; every bad input ends with one line, exit code 2 and no output."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from rdmm_lightning.cli.main import main
from tests.models.helpers import make_module, trainer
from tests.pipeline.helpers import write_pair

FAST = [
    "iterations=[3,2]",
    "scales=[0.5,1.0]",
    "affine_options.iterations=[4]",
    "affine_options.scales=[1.0]",
    "solver.num_steps=4",
]
PAIR_FILES = {
    "warped.nii.gz",
    "affine.mat",
    "composite.h5",
    "displacement.nii.gz",
    "inverse_displacement.nii.gz",
    "jacobian.nii.gz",
    "metrics.json",
    "overview.png",
}
COLUMNS = [
    "index",
    "source",
    "target",
    "dice_mean",
    "dice_initial_mean",
    "negative_jacobian_voxels",
    "negative_jacobian_fraction",
    "folds",
    "time_s",
]
HEADER = "source,target,source_label,target_label"


def _row(folder: str, labels: bool = True) -> str:
    names = ["source", "target"] + (["source_label", "target_label"] if labels else [])
    return ",".join(f"{folder}/{n}.nii.gz" for n in names)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two 2D pairs in a/ and b/ (relative paths in the CSVs), pairs.csv with labels,
    nolabels.csv without label columns, and an untrained 2D rdmm network checkpoint."""
    root = tmp_path_factory.mktemp("evaluate")
    write_pair(root / "a", 2, deform=1.2)
    write_pair(root / "b", 2, deform=2.0)
    (root / "pairs.csv").write_text(f"{HEADER}\n{_row('a')}\n\n{_row('b')}\n")
    (root / "nolabels.csv").write_text(f"source,target\n{_row('a', False)}\n")
    torch.manual_seed(0)
    module = make_module("rdmm", (16, 16))
    tr = trainer(root)
    tr.strategy.connect(module)
    tr.save_checkpoint(root / "rdmm.ckpt")
    return root


def _results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("rdmm evaluate: error: "), err
    return err


def test_evaluate_model_with_labels(data, tmp_path, capsys):
    out = tmp_path / "svf"
    argv = ["evaluate", "--model", "svf", "--pairs", str(data / "pairs.csv"), "--out", str(out)]
    assert main(argv + FAST) == 0
    captured = capsys.readouterr()
    progress = captured.err.strip().splitlines()
    assert [line.split(":")[0] for line in progress] == ["pair 1/2", "pair 2/2"]
    assert all("Dice 0." in line and " s" in line for line in progress)
    assert "| dice_mean |" in captured.out and "|---|" in captured.out

    assert {p.name for p in out.iterdir()} == {
        "pair_001",
        "pair_002",
        "results.csv",
        "summary.json",
    }
    for name in ("pair_001", "pair_002"):
        assert {p.name for p in (out / name).iterdir()} == PAIR_FILES | {"warped_label.nii.gz"}
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["model"] == "svf" and metrics["config"]["iterations"] == [3, 2]
    rows = _results(out)
    assert [r["index"] for r in rows] == ["1", "2"]
    assert rows[0]["source"] == str(data / "a" / "source.nii.gz")
    for r in rows:
        assert 0 < float(r["dice_mean"]) <= 1 and 0 < float(r["dice_initial_mean"]) <= 1

    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 2 and summary["pairs_with_labels"] == 2
    assert summary["model"] == "svf" and summary["checkpoint"] is None
    assert summary["config"]["model"] == "svf" and summary["config"]["solver"]["num_steps"] == 4
    for key in COLUMNS[3:]:
        values = [float(r[key]) for r in rows]
        assert summary["mean"][key] == pytest.approx(np.mean(values), rel=1e-9, abs=1e-12)
        assert summary["std"][key] == pytest.approx(np.std(values), rel=1e-6, abs=1e-9)


def test_evaluate_without_labels(data, tmp_path, capsys):
    out = tmp_path / "affine"
    argv = ["evaluate", "--pairs", str(data / "nolabels.csv"), "--out", str(out)]
    assert main(argv + ["--model", "affine"] + FAST[2:4]) == 0
    assert "Dice -" in capsys.readouterr().err
    assert {p.name for p in (out / "pair_001").iterdir()} == PAIR_FILES
    (row,) = _results(out)
    assert row["dice_mean"] == "" and row["dice_initial_mean"] == ""
    assert int(row["negative_jacobian_voxels"]) >= 0 and float(row["time_s"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 1 and summary["pairs_with_labels"] == 0
    assert summary["mean"]["dice_mean"] is None and summary["mean"]["time_s"] > 0


def test_evaluate_checkpoint_matches_infer(data, tmp_path, capsys):
    out = tmp_path / "net"
    argv = ["evaluate", "--checkpoint", str(data / "rdmm.ckpt"), "--pairs", str(data / "pairs.csv")]
    assert main(argv + ["--out", str(out), "--num-steps", "2"]) == 0
    assert "rdmm: 2 pairs" in capsys.readouterr().out
    rows = _results(out)
    assert len(rows) == 2 and all(0 < float(r["dice_mean"]) <= 1 for r in rows)
    assert (out / "pair_001" / "sigma_t1.nii.gz").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"] == str(data / "rdmm.ckpt") and summary["model"] == "rdmm"
    assert summary["config"]["num_steps"] == 2 and summary["config"]["refine_steps"] == 0

    # the same pair through `rdmm infer` gives the same outputs
    a = data / "a"
    infer = ["infer", "--checkpoint", str(data / "rdmm.ckpt"), str(a / "source.nii.gz")]
    infer += [str(a / "target.nii.gz"), "--out", str(tmp_path / "infer"), "--num-steps", "2"]
    infer += ["--source-label", str(a / "source_label.nii.gz")]
    infer += ["--target-label", str(a / "target_label.nii.gz")]
    assert main(infer) == 0
    mine = json.loads((out / "pair_001" / "metrics.json").read_text())
    theirs = json.loads((tmp_path / "infer" / "metrics.json").read_text())
    assert mine["dice"] == theirs["dice"]
    assert mine["negative_jacobian_voxels"] == theirs["negative_jacobian_voxels"]
    for name in ("warped.nii.gz", "displacement.nii.gz"):
        np.testing.assert_allclose(
            nib.load(out / "pair_001" / name).get_fdata(),
            nib.load(tmp_path / "infer" / name).get_fdata(),
            atol=1e-5,
        )


def test_evaluate_bad_inputs_exit_2_without_output(data, tmp_path, capsys):
    out = tmp_path / "never"
    pairs = str(data / "pairs.csv")

    def check(argv: list[str], *expected: str) -> None:
        assert main(["evaluate", "--out", str(out)] + argv) == 2, argv
        err = _one_line_error(capsys)
        for text in expected:
            assert text in err, (text, err)
        assert not out.exists(), argv

    def write(name: str, text: str | bytes) -> str:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    model = ["--model", "svf"]
    check(model + ["--pairs", str(tmp_path / "absent.csv")], "absent.csv", "not found")
    check(model + ["--pairs", str(tmp_path)], str(tmp_path), "not a file")
    check(model + ["--pairs", write("binary.csv", b"\xff\xfe\x00\x81")], "binary.csv")
    check(
        model + ["--pairs", write("cols.csv", f"src,target\n{_row('a')}\n")], "cols.csv", "source"
    )
    check(model + ["--pairs", write("empty.csv", "")], "empty.csv")
    check(model + ["--pairs", write("header.csv", HEADER + "\n")], "header.csv", "no pairs")

    # a missing file on line 3 is found before pair 1 (line 2) is registered
    text = f"{HEADER}\n{_row(str(data / 'a'))}\n{data}/a/source.nii.gz,{data}/nothing.nii.gz,,\n"
    check(
        model + ["--pairs", write("missing.csv", text)], "missing.csv", "line 3", "nothing.nii.gz"
    )
    text = f"{HEADER}\n{data}/a/source.nii.gz,{data}/a/target.nii.gz,{data}/a/source.nii.gz,\n"
    check(model + ["--pairs", write("half.csv", text)], "half.csv", "line 2", "target_label")

    ckpt = ["--checkpoint", str(data / "rdmm.ckpt")]
    check(["--pairs", pairs] + ckpt + model, "--checkpoint", "--model")
    check(["--pairs", pairs], "--checkpoint", "--model")
    check(["--pairs", pairs, "--model", "bspline"], "--model", "bspline")
    check(["--pairs", pairs] + model + ["--num-steps", "2"], "--num-steps")
    check(["--pairs", pairs] + model + ["--network-precision", "float32"], "--network-precision")
    check(["--pairs", pairs] + model + ["--compile-shooting"], "--compile-shooting")
    check(["--pairs", pairs] + ckpt + ["iterations=3"], "key=value")
    check(["--pairs", pairs] + ckpt + ["--config", "c.yaml"], "--config")
    check(["--pairs", pairs] + model + ["solver.steps=3"], "solver.steps")
    check(["--pairs", pairs] + model + ["--config", str(tmp_path / "no.yaml")], "no.yaml")
    check(["--pairs", pairs, "--checkpoint", str(tmp_path / "no.ckpt")], "no.ckpt")
    if not torch.cuda.is_available():
        check(["--pairs", pairs] + model + ["--device", "cuda"], "cuda")


def test_evaluate_stops_at_a_failing_pair_and_keeps_the_finished_ones(data, tmp_path, capsys):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not an image at all")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        f"source,target\n{_row(str(data / 'a'), False)}\n{bad},{data}/a/target.nii.gz\n"
    )
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "affine", "--pairs", str(pairs), "--out", str(out)]
    assert main(argv + FAST[2:4]) == 2
    progress, err = capsys.readouterr().err.strip().splitlines()
    assert progress.startswith("pair 1/2: Dice -")
    assert err.startswith("rdmm evaluate: error: ")
    assert "pair 2/2" in err and "line 3" in err and "corrupt.nii.gz" in err
    assert {p.name for p in out.iterdir()} == {"pair_001"}
    assert math.isfinite(json.loads((out / "pair_001" / "metrics.json").read_text())["time_s"])


def test_evaluate_resume_and_incomplete_pairs(data, tmp_path, capsys):
    """--resume keeps the pairs of an earlier run; a --max-time spent before any svf iteration
    (0.05 s is less than the reserve for writing) marks the pairs incomplete: WARNING, exit 3."""
    out = tmp_path / "svf"
    argv = ["evaluate", "--model", "svf", "--pairs", str(data / "pairs.csv"), "--out", str(out)]
    assert main(argv + FAST) == 0
    first = _results(out)
    capsys.readouterr()
    assert main(argv + FAST + ["--resume", "--strict"]) == 0
    assert capsys.readouterr().err.count("(done earlier, kept)") == 2
    assert _results(out) == first
    out = tmp_path / "timed"
    argv = ["evaluate", "--model", "svf", "--pairs", str(data / "nolabels.csv"), "--out", str(out)]
    assert main(argv + FAST + ["--max-time", "0.05"]) == 3
    err = capsys.readouterr().err
    assert "rdmm evaluate: WARNING: pair 1 ran 0 deformable iterations" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incomplete"] == [1] and summary["stopped_early"] == [1]
    metrics = json.loads((out / "pair_001" / "metrics.json").read_text())
    assert metrics["model"] == "affine" and metrics["complete"] is False
