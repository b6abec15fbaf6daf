"""``--preset`` and ``--print-config`` of ``rdmm register`` and ``rdmm evaluate``: the help lists
the presets, the printed YAML is the resolved config (a valid ``--config`` file), nothing is read
or written, and a wrong preset is one line with exit code 2."""

from __future__ import annotations

import json

import pytest
import yaml

from rdmm_lightning.cli.main import main
from rdmm_lightning.options import Preset, values
from rdmm_lightning.pipeline.config import load_preset, resolve_register_config
from rdmm_lightning.presets import preset_summary
from tests.pipeline.helpers import write_pair

PRESETS = values(Preset)
FAST = ["iterations=[2,1]", "scales=[0.5,1.0]", "solver.num_steps=4"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_help_lists_every_preset_on_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["register", "--help"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name in PRESETS:
        (line,) = [x for x in lines if x.split()[:1] == [name]]
        assert line.strip() == f"{name:<10} {preset_summary(name)}"
    assert "--print-config" in "\n".join(lines)


def test_print_config_is_the_resolved_yaml_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["register", str(tmp_path / "absent_source.nii.gz"), str(tmp_path / "absent.nii.gz"),
            "--out", str(out), "--preset", "knee", "--similarity", "lncc", "--print-config",
            "energy_weight=3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    cfg = yaml.safe_load(printed)
    expected = resolve_register_config(
        None, ["preset=knee", "energy_weight=3"], {"similarity": "lncc"}
    )
    assert cfg == expected
    assert cfg["preset"] == "knee" and cfg["similarity"] == "lncc" and cfg["energy_weight"] == 3
    assert cfg["spacing_mode"] == load_preset("knee")["spacing_mode"] == "physical"  # preset
    assert list(tmp_path.iterdir()) == []  # no output folder, no file
    # the printed YAML is a --config file that resolves to itself
    config = tmp_path / "printed.yaml"
    config.write_text(printed)
    assert main(["register", "--config", str(config), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


def test_print_config_without_images_and_with_moving_fixed(tmp_path, capsys):
    assert main(["register", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["preset"] is None
    argv = ["register", "--moving", "m.nii", "--fixed", "f.nii", "--print-config", "preset=lung"]
    assert main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["preset"] == "lung" and cfg["sigmas"] == load_preset("lung")["sigmas"]
    # key=value names a preset over --preset, as key=value wins over flags
    assert main(["register", "--preset", "brain", "--print-config", "preset=synthetic"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["preset"] == "synthetic"


@pytest.mark.parametrize("print_config", [False, True])
def test_unknown_preset_exits_2_with_one_line(tmp_path, capsys, print_config):
    paths = write_pair(tmp_path / "pair", 2)
    out = tmp_path / "out"
    argv = ["register", str(paths["source"]), str(paths["target"]), "--out", str(out),
            "--preset", "liver"] + (["--print-config"] if print_config else [])  # fmt: skip
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "unknown preset 'liver'" in err and all(name in err for name in PRESETS)
    assert not out.exists() and capsys.readouterr().out == ""


def test_register_without_out_is_an_error(tmp_path, capsys):
    paths = write_pair(tmp_path / "pair", 2)
    assert main(["register", str(paths["source"]), str(paths["target"])]) == 2
    assert "--out DIR is required" in _one_line_error(capsys)


def test_evaluate_preset_and_print_config(tmp_path, capsys):
    argv = ["evaluate", "--model", "lddmm", "--preset", "brain", "--print-config", "iterations=5"]
    assert main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg == resolve_register_config(
        None, ["preset=brain", "iterations=5"], {"model": "lddmm"}
    )
    assert list(tmp_path.iterdir()) == []
    for flags in (["--preset", "brain"], ["--print-config"]):
        argv = ["evaluate", "--checkpoint", "x.ckpt", "--pairs", "p.csv", "--out", "o", *flags]
        assert main(argv) == 2
        assert f"{flags[0]} applies to --model" in _one_line_error(capsys)
    assert main(["evaluate", "--model", "svf", "--out", str(tmp_path / "o")]) == 2
    assert "--pairs PAIRS.csv is required" in _one_line_error(capsys)
    assert main(["evaluate", "--model", "svf", "--preset", "nope", "--print-config"]) == 2
    assert "unknown preset 'nope'" in _one_line_error(capsys)


@pytest.mark.slow
def test_register_with_a_preset_records_it(tmp_path, capsys):
    paths = write_pair(tmp_path / "pair", 2)
    out = tmp_path / "out"
    argv = ["register", str(paths["source"]), str(paths["target"]), "--out", str(out),
            "--preset", "synthetic", "--model", "svf", *FAST]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["preset"] == "synthetic" and metrics["config"]["affine"] is False
    assert metrics["config"]["normalize"] == "none" and metrics["model"] == "svf"
