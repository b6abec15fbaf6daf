"""``benchmarks/train_step.py``: the table of a tiny run, its split, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.train_step import (
    BACKWARD,
    COLUMNS,
    LOSS,
    NETWORK,
    SHOOTING,
    split_adds_up,
    split_coverage,
    summarise,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "train_step.py"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    tiny_data = [
        f"data.data_dir={tmp_path / 'synth2d'}",
        "data.synthetic_options.num_train=2",
        "data.synthetic_options.num_val=1",
        "data.synthetic_options.num_test=1",
        "data.synthetic_options.size=48",
    ]
    cmd = [sys.executable, str(SCRIPT), "--threads", "1", *args, *tiny_data]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def _table(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_tiny_run_prints_the_table_and_the_split_adds_up(tmp_path):
    out_json = tmp_path / "rows.json"
    args = ("--dims", "2", "--size", "32", "--repeats", "1", "--models", "rdmm")
    res = _run(tmp_path, *args, "--solver-steps", "2", "--json", str(out_json))
    assert res.returncode == 0, res.stderr[-2000:]
    header, *rows = _table(res.stdout)
    assert header[:4] == ["model", "grid (batch)", "steps/s", "s/step"]
    for name in ("data s", "network s", "shooting s", "sim+reg s", "bwd+opt s", "peak RSS MB"):
        assert name in header
    assert len(rows) == 1 and len(rows[0]) == len(COLUMNS) == len(header)
    assert rows[0][:2] == ["rdmm-net", "32x32 (2)"]
    assert "load average" in res.stdout.split("| model")[0]  # what else was running
    assert "load average" in res.stdout.split("| rdmm-net")[1]
    (row,) = json.loads(out_json.read_text())["rows"]
    (record,) = row["records"]
    assert record["batch"] == 2 and min(record[p] for p in (NETWORK, SHOOTING, LOSS)) > 0
    assert split_adds_up(row["records"]), split_coverage(row["records"])
    assert float(rows[0][2]) == pytest.approx(1 / record["step"], rel=0.01)
    assert 0 < record["cpu"] < 2 * record["step"]  # one thread
    assert row["peak_rss_mb"] >= row["rss_before_mb"] > 0


def _record(**parts: float) -> dict[str, float]:
    return {"step": 1.0, "cpu": 0.9, "data": 0.5, **parts}


def test_split_check_needs_every_part():
    """The named parts must cover the step; leaving one out (negative control) fails."""
    full = {NETWORK: 0.2, SHOOTING: 0.3, LOSS: 0.1, BACKWARD: 0.38}
    records = [_record(**full), _record(**{k: 1.1 * v for k, v in full.items()})]
    assert split_adds_up(records)
    summary = summarise(records)
    assert summary["other_s"] == pytest.approx((0.02 - 0.078) / 2)
    assert summary["parts_s"][BACKWARD] == pytest.approx(0.38 * 1.05)
    without_backward = [{k: v for k, v in r.items() if k != BACKWARD} for r in records]
    assert not split_adds_up(without_backward)
    assert split_coverage(without_backward) == pytest.approx(0.6 * 1.05)


def test_bad_option_and_bad_override_exit_2_without_output(tmp_path):
    out_json = tmp_path / "rows.json"
    res = _run(tmp_path, "--dims", "4", "--json", str(out_json))
    assert res.returncode == 2 and "--dims" in res.stderr.splitlines()[-1]
    res = _run(tmp_path, "--dims", "2", "--json", str(out_json), "model.no_such_key=1")
    assert res.returncode == 2
    assert "no_such_key" in res.stderr.splitlines()[-1] and "config" in res.stderr
    assert "| model" not in res.stdout and not out_json.exists()
