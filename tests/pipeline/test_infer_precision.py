"""``rdmm infer --network-precision auto|float32|bfloat16``: a checkpoint trained with bfloat16
UNets runs in float32 where the CPU has no native bfloat16 (``auto``), or as forced; the choice
is recorded in metrics.json and changes the networks' arithmetic (negative control: forcing
bfloat16 gives a different registration)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import rdmm_lightning as rl
from rdmm_lightning.cli.main import main
from rdmm_lightning.nets.precision import native_bfloat16
from tests.pipeline.helpers import tiny_rdmm_checkpoint, write_ball_pair

SHAPE = (12, 12, 12)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3D pair of NIfTI files (a ball and a shifted ellipsoid) and a tiny rdmm-net checkpoint
    trained one step with ``network_precision="bfloat16"``."""
    folder = tmp_path_factory.mktemp("infer_precision")
    paths = write_ball_pair(folder)
    ckpt = folder / "rdmm_bf16.ckpt"
    paths["ckpt"] = tiny_rdmm_checkpoint(ckpt, SHAPE, network_precision="bfloat16")
    return paths


def _infer(files, out, *extra) -> int:
    argv = ["infer", "--checkpoint", str(files["ckpt"]), str(files["source"])]
    return main([*argv, str(files["target"]), "--out", str(out), "--threads", "1", *extra])


def _run(files, out, *extra) -> tuple[str, np.ndarray]:
    assert _infer(files, out, *extra) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    warped = np.asarray(nib.load(out / "warped.nii.gz").dataobj)
    return metrics["config"]["network_precision"], warped


def test_auto_runs_float32_without_native_bfloat16_and_forced_bfloat16_differs(
    files, tmp_path, monkeypatch
):
    float32 = _run(files, tmp_path / "f32", "--network-precision", "float32")
    bfloat16 = _run(files, tmp_path / "bf16", "--network-precision", "bfloat16")
    assert float32[0] == "float32" and bfloat16[0] == "bfloat16"
    assert not np.array_equal(float32[1], bfloat16[1])  # the precision reached the networks
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below AVX512-BF16
    assert not native_bfloat16("cpu")
    auto = _run(files, tmp_path / "auto", "--network-precision", "auto")
    assert auto[0] == "float32"
    np.testing.assert_array_equal(auto[1], float32[1])


def test_auto_keeps_bfloat16_where_the_cpu_has_it(files, tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    expected = "bfloat16" if native_bfloat16("cpu") else "float32"
    assert _run(files, tmp_path / "auto")[0] == expected  # the default is auto


def test_unknown_precision_is_one_line_with_the_choices(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _infer(files, tmp_path / "bad", "--network-precision", "half")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--network-precision" in err and "auto" in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="network_precision must be 'auto', 'float32' or"):
        rl.infer(files["source"], files["target"], files["ckpt"], network_precision="half")
