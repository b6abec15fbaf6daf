"""``evaluate_pairs`` and its helpers: the summary, option checks (PAIRS.csv: tests/io)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rdmm_lightning.pipeline.evaluate import (
    RESULT_COLUMNS,
    PairRow,
    evaluate_pairs,
    format_summary_table,
    pair_folder_name,
)
from tests.pipeline.helpers import write_pair

AFFINE_FAST = {"affine_options": {"iterations": [4], "scales": [1.0]}}


@pytest.fixture(scope="module")
def pair2d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evalpair")
    write_pair(folder / "p", 2)
    return folder


def test_pair_folder_name():
    assert pair_folder_name(1, 2) == "pair_001"
    assert pair_folder_name(12, 1500) == "pair_0012"


def test_format_summary_table():
    summary = {
        "model": "svf",
        "pairs": 3,
        "pairs_with_labels": 0,
        "mean": {k: None if "dice" in k else 0.5 for k in RESULT_COLUMNS[3:]},
        "std": {k: None if "dice" in k else 0.0 for k in RESULT_COLUMNS[3:]},
    }
    lines = format_summary_table(summary).splitlines()
    assert lines[0] == "svf: 3 pairs (0 with labels)"
    assert "| dice_mean | - | - |" in lines and "| time_s | 0.5 | 0 |" in lines


def test_evaluate_pairs_returns_rows_and_summary(pair2d, tmp_path, capsys):
    p = pair2d / "p"
    labelled = f"{p}/source.nii.gz,{p}/target.nii.gz,{p}/source_label.nii.gz,"
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        "source,target,source_label,target_label\n"
        f"{labelled}{p}/target_label.nii.gz\n{p}/source.nii.gz,{p}/target.nii.gz,,\n"
    )
    out = tmp_path / "out"
    ev = evaluate_pairs(csv_file, out, model="affine", config=AFFINE_FAST, progress=False)
    assert capsys.readouterr().err == ""
    assert [r["index"] for r in ev.rows] == [1, 2]
    assert ev.rows[0]["dice_mean"] is not None and ev.rows[1]["dice_mean"] is None
    # Dice is averaged over the labelled pairs only; the rest over all pairs
    assert ev.summary["mean"]["dice_mean"] == pytest.approx(ev.rows[0]["dice_mean"])
    assert ev.summary["std"]["dice_mean"] == 0.0
    mean_time = (ev.rows[0]["time_s"] + ev.rows[1]["time_s"]) / 2
    assert ev.summary["mean"]["time_s"] == pytest.approx(mean_time)
    assert ev.summary["config"]["affine_options"]["iterations"] == [4]
    assert json.loads((out / "summary.json").read_text()) == ev.summary


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of checkpoint"),
        ({"model": "svf", "checkpoint": "x.ckpt"}, "exactly one of checkpoint"),
        ({"model": "svf", "num_steps": 2}, "checkpoint, not a pairwise model"),
        ({"model": "svf", "network_precision": "float32"}, "checkpoint, not a pairwise model"),
        ({"model": "svf", "compile_shooting": True}, "checkpoint, not a pairwise model"),
        ({"checkpoint": "x.ckpt", "max_time": 3.0}, "max_time apply to a pairwise model"),
        ({"model": "bspline"}, "option 'model' must be one of"),
        ({"model": "svf", "overrides": ["nope=1"]}, "unknown option 'nope'"),
    ],
)
def test_evaluate_pairs_checks_options_before_any_output(pair2d, tmp_path, kwargs, message):
    p = pair2d / "p"
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(f"source,target\n{p}/source.nii.gz,{p}/target.nii.gz\n")
    with pytest.raises(ValueError, match=message):
        evaluate_pairs(csv_file, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_pair_row_defaults():
    row = PairRow(index=1, line=2, source="a", target="b")
    assert not row.has_labels


def _three_pairs(pair2d: Path, folder: Path) -> Path:
    """PAIRS.csv of three pairs; the third pair's source is a copy that a test may break."""
    p = pair2d / "p"
    third = folder / "third_source.nii.gz"
    third.write_bytes((p / "source.nii.gz").read_bytes())
    labels = f"{p}/source_label.nii.gz,{p}/target_label.nii.gz"
    csv_file = folder / "pairs.csv"
    csv_file.write_text(
        "source,target,source_label,target_label\n"
        f"{p}/source.nii.gz,{p}/target.nii.gz,{labels}\n"
        f"{p}/target.nii.gz,{p}/source.nii.gz,,\n"
        f"{third},{p}/target.nii.gz,{labels}\n"
    )
    return csv_file


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def test_resume_keeps_done_pairs_and_gives_the_uninterrupted_results(pair2d, tmp_path, capsys):
    """A run that stops at pair 3 (its source file is broken) keeps pairs 1-2; --resume after
    the file is mended registers pair 3 only, keeps the rows of 1-2 as they were written, and
    gives the results of a run that was never interrupted (timings aside)."""
    csv_file = _three_pairs(pair2d, tmp_path)
    whole = evaluate_pairs(csv_file, tmp_path / "whole", model="affine", config=AFFINE_FAST)
    third = tmp_path / "third_source.nii.gz"
    good = third.read_bytes()
    third.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="pair 3/3 .* failed: .*pairs 1-2 are in"):
        evaluate_pairs(csv_file, out, model="affine", config=AFFINE_FAST)
    assert sorted(p.name for p in out.iterdir()) == ["pair_001", "pair_002"]
    first = {i: json.loads((out / f"pair_00{i}" / "metrics.json").read_text()) for i in (1, 2)}
    third.write_bytes(good)
    capsys.readouterr()
    resumed = evaluate_pairs(csv_file, out, model="affine", config=AFFINE_FAST, resume=True)
    assert resumed.resumed == [1, 2]
    err = capsys.readouterr().err
    assert "pair 1/3" in err and "(done earlier, kept)" in err and "pair 3/3" in err
    assert err.count("(done earlier, kept)") == 2
    assert _without_time(resumed.rows) == _without_time(whole.rows)
    for i in (1, 2):  # the rows of the done pairs are those written before, timings included
        assert resumed.rows[i - 1]["time_s"] == first[i]["time_s"]
        assert json.loads((out / f"pair_00{i}" / "metrics.json").read_text()) == first[i]
    written = (out / "results.csv").read_text().splitlines()
    assert len(written) == 4 and written[0] == ",".join(RESULT_COLUMNS)
    assert resumed.summary["pairs"] == 3 and resumed.summary["incomplete"] == []
    mean = resumed.summary["mean"]["dice_mean"]
    assert mean == pytest.approx(whole.summary["mean"]["dice_mean"], abs=0)


def test_resume_refuses_other_options_or_pairs(pair2d, tmp_path):
    csv_file = _three_pairs(pair2d, tmp_path)
    out = tmp_path / "out"
    evaluate_pairs(csv_file, out, model="affine", config=AFFINE_FAST, progress=False)
    other = {"affine_options": {"iterations": [5], "scales": [1.0]}}
    with pytest.raises(ValueError, match=r"pair_001 was registered with other options .*affine"):
        evaluate_pairs(csv_file, out, model="affine", config=other, resume=True, progress=False)
    # runtime options may differ: nothing is registered again
    again = evaluate_pairs(
        csv_file, out, model="affine", config=AFFINE_FAST, resume=True, threads=2, progress=False
    )
    assert again.resumed == [1, 2, 3]
    swapped = tmp_path / "swapped.csv"
    lines = csv_file.read_text().splitlines()
    swapped.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    with pytest.raises(ValueError, match="pair_001 holds another pair"):
        evaluate_pairs(swapped, out, model="affine", config=AFFINE_FAST, resume=True)
