"""``evaluate_pairs`` and its helpers: reading PAIRS.csv, the summary, option checks."""

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
    read_pairs_csv,
)
from tests.pipeline.helpers import write_pair

AFFINE_FAST = {"affine_options": {"iterations": [4], "scales": [1.0]}}


@pytest.fixture(scope="module")
def pair2d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evalpair")
    write_pair(folder / "p", 2)
    return folder


def test_read_pairs_csv_resolves_paths_and_skips_blank_lines(pair2d, tmp_path):
    p = pair2d / "p"
    sub = tmp_path / "lists"
    sub.mkdir()
    rel = Path("..") / ".." / pair2d.name / "p"
    text = (
        "\ufeffid, source ,target,target_label,source_label\n"  # BOM, spaces, any column order
        f"x,{rel}/source.nii.gz,{p}/target.nii.gz,,\n"
        "\n"
        f'"y","{p}/source.nii.gz",{p}/target.nii.gz,{p}/target_label.nii.gz,'
        f"{p}/source_label.nii.gz\n"
    )
    (sub / "pairs.csv").write_text(text)
    # the relative path is relative to the CSV's folder, not the working directory
    rows = read_pairs_csv(sub / "pairs.csv", check_files=False)
    assert [(r.index, r.line) for r in rows] == [(1, 2), (2, 4)]
    assert Path(rows[0].source).resolve() == (p / "source.nii.gz").resolve()
    assert not rows[0].has_labels and rows[0].target_label is None
    assert rows[1].has_labels and rows[1].source_label == str(p / "source_label.nii.gz")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty pairs file"),
        ("source,target\n", "no pairs"),
        ("source,image\na.nii.gz,b.nii.gz\n", "missing column(s) target"),
        ("source,target,source_label\na.nii.gz,b.nii.gz,c.nii.gz\n", "target_label"),
        ("source,target\na.nii.gz,\n", "line 2: empty target cell"),
        ("source,target\n{p}/source.nii.gz,{p}/absent.nii.gz\n", "line 2, target"),
        ("source,target\n{p}/source.nii.gz,{p}/target.txt\n", "line 2, target"),
    ],
)
def test_read_pairs_csv_errors_name_the_file_and_line(pair2d, tmp_path, text, message):
    csv_file = tmp_path / "pairs.csv"
    p = pair2d / "p"
    if "target.txt" in text:
        (p / "target.txt").write_text("x")
    csv_file.write_text(text.format(p=p))
    with pytest.raises(ValueError, match=r"pairs\.csv") as info:
        read_pairs_csv(csv_file)
    assert message in str(info.value) and "\n" not in str(info.value)


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
