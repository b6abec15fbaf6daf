"""``rdmm infer --compile-shooting``: a checkpoint trained without compiling shoots through
``torch.compile`` at inference; the registration is the eager one to round-off and the choice
is recorded in metrics.json."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from rdmm_lightning.cli.main import main
from rdmm_lightning.pipeline.network import load_network
from tests.models.helpers import loader, make_module, trainer

SHAPE = (12, 12, 12)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3D pair of NIfTI files and a tiny rdmm-net checkpoint trained one step."""
    folder = tmp_path_factory.mktemp("infer_compile")
    zz, yy, xx = np.meshgrid(*[np.arange(16.0)] * 3, indexing="ij")
    source = ((zz - 8) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2 < 25).astype(np.float32)
    target = ((zz - 8) / 5) ** 2 + ((yy - 7) / 6) ** 2 + ((xx - 9) / 4) ** 2 < 1
    paths = {}
    for name, image in (("source", source), ("target", target.astype(np.float32))):
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.diag([1.5, 1.5, 1.5, 1.0])), paths[name])
    torch.manual_seed(0)
    module = make_module("rdmm", SHAPE, log_figures=False)
    with torch.no_grad():  # a visible deformation
        module.net.momentum_net.unet.out.weight.normal_(std=0.05)
    tr = trainer(folder, max_steps=1, limit_val_batches=0)
    tr.fit(module, loader(SHAPE, n=1, batch_size=1))
    paths["ckpt"] = folder / "rdmm.ckpt"
    tr.save_checkpoint(paths["ckpt"])
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
