"""``rdmm data synth2d`` and ``rdmm data synth3d``."""

from __future__ import annotations

import csv

from rdmm_lightning.cli.main import main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_synth2d(tmp_path, capsys):
    out = tmp_path / "s2d"
    assert main(["data", "synth2d", "--out", str(out), "--pairs", "2", "--size", "64"]) == 0
    rows = _rows(out / "pairs.csv")
    assert len(rows) == 2
    for row in rows:
        for name in row.values():
            assert (out / name).is_file()
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and str(out / "pairs.csv") in summary[0]
    # rewriting an existing dataset folder is fine
    assert main(["data", "synth2d", "--out", str(out), "--pairs", "1", "--size", "64"]) == 0


def test_synth3d(tmp_path, capsys):
    out = tmp_path / "s3d"
    argv = ["data", "synth3d", "--out", str(out), "--subjects", "2", "--shape", "24", "32", "32"]
    assert main(argv) == 0
    rows = _rows(out / "pool.csv")
    assert len(rows) == 4
    for row in rows:
        assert (out / row["path"]).is_file() and (out / row["label"]).is_file()
    assert str(out / "pool.csv") in capsys.readouterr().out


def test_user_errors(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["data", "synth3d", "--out", out, "--subjects", "0"]) == 2
    assert "subjects" in capsys.readouterr().err
    assert main(["data", "synth2d", "--out", out, "--size", "20"]) == 2
    assert main(["data", "synth3d", "--out", out, "--subjects", "1", "--visits", "0"]) == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    assert main(["data", "synth2d", "--out", str(busy), "--pairs", "1", "--size", "64"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "synth3d", "--out", str(busy / "mine.txt"), "--subjects", "1"]) == 2
    assert sorted(p.name for p in busy.iterdir()) == ["mine.txt"]
