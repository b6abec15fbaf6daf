"""After a plain (non-editable) ``pip install`` the configs ship inside the package and training
runs from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from ..wheel import build_wheel
from .helpers import tiny_overrides


@pytest.mark.slow
def test_training_from_a_built_wheel(tmp_path):
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    configs = site / "rdmm_lightning" / "configs"
    assert (configs / "experiment" / "quickstart.yaml").is_file()
    assert (configs / "hydra" / "help" / "train.yaml").is_file()  # the app's --help

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    code = (
        "import sys, rdmm_lightning, rdmm_lightning.training as t; "
        "assert rdmm_lightning.__file__.startswith(sys.argv[1]), rdmm_lightning.__file__; "
        "sys.exit(t.main(sys.argv[2:]))"
    )
    overrides = tiny_overrides(tmp_path / "data", "runs")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site), *overrides],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list((work / "runs" / "quickstart").glob("*/best.ckpt"))
    assert "rdmm infer --checkpoint runs/quickstart/" in proc.stdout
    # the Hydra app finds the installed configs: its search path and help
    for args, expected in ((["--info", "searchpath"], "pkg://rdmm_lightning.configs"),
                           (["--help"], "oai_rdmm_net")):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", code, str(site), *args],
            cwd=work, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0 and expected in proc.stdout, proc.stdout + proc.stderr
