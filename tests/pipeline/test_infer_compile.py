"""``rdmm infer --compile-shooting``: a checkpoint trained without compiling shoots through
``torch.compile`` at inference; the registration is the eager one to round-off and the choice
is recorded in metrics.json."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from rdmm_lightning.cli.main import main
from rdmm_lightning.pipeline.network import load_network
from tests.pipeline.helpers import tiny_rdmm_checkpoint, write_ball_pair

SHAPE = (12, 12, 12)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3D pair of NIfTI files and a tiny rdmm-net checkpoint trained one step."""
    folder = tmp_path_factory.mktemp("infer_compile")
    paths = write_ball_pair(folder)
    paths["ckpt"] = tiny_rdmm_checkpoint(folder / "rdmm.ckpt", SHAPE, momentum_std=0.05)
    return paths


def _run(files, out, *extra) -> tuple[dict, np.ndarray]:
    argv = ["infer", "--checkpoint", str(files["ckpt"]), str(files["source"])]
    argv += [str(files["target"]), "--out", str(out), "--threads", "1", *extra]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["config"], np.asarray(nib.load(out / "warped.nii.gz").dataobj)


def test_compiled_shooting_registers_as_eager_and_is_recorded(files, tmp_path):
    eager = _run(files, tmp_path / "eager")
    compiled = _run(files, tmp_path / "compiled", "--compile-shooting")
    assert eager[0]["compile_shooting"] is False
    assert compiled[0]["compile_shooting"] is True
    assert compiled[0]["hparams"].get("solver_compile", False) is False  # as trained
    source = np.asarray(nib.load(files["source"]).dataobj)
    assert float(np.abs(eager[1] - source).max()) > 0.1  # it did deform
    np.testing.assert_allclose(compiled[1], eager[1], atol=1e-5)


def test_load_network_sets_both_shooting_units(files):
    network = load_network(files["ckpt"], compile_shooting=True, device="cpu")
    net = network.module.net
    assert net.unit.solver.compile and net.unit_forward.solver.compile
    assert not load_network(files["ckpt"], device="cpu").module.net.unit.solver.compile
