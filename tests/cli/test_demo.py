from rdmm_lightning.cli import demo


def test_demo_writes_figures_and_table(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--steps", "2", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "shooting_2d.png").stat().st_size > 10_000
    assert (tmp_path / "shooting_3d.png").stat().st_size > 10_000
    rows = [line for line in out.splitlines() if line.startswith("| ") and "model" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["svf", "lddmm", "rdmm"] * 2
    # no folds reported for the moderate demo momenta
    assert all(r.split("|")[5].strip() == "0" for r in rows)
