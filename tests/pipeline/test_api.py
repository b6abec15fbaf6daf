"""The notebook API: rdmm_lightning.register and rdmm_lightning.warp."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import rdmm_lightning as rl
from rdmm_lightning.io import Volume, read_image
from rdmm_lightning.ops.grid import identity_map
from tests.pipeline.helpers import write_pair


def soft_disk(shape, radius: float, center: float = 0.5) -> torch.Tensor:
    """A disk of ``radius`` (domain units) with a sigmoid edge, ``(*S)`` float32."""
    x = identity_map(shape, dtype=torch.float32)
    r = ((x - center) ** 2).sum(1).sqrt()[0]
    return torch.sigmoid((radius - r) / 0.03)


FAST = {
    "iterations": [3, 2],
    "scales": [0.5, 1.0],
    "affine_options": {"iterations": [4], "scales": [1.0]},
    "solver": {"num_steps": 4},
}


def test_lazy_top_level():
    code = (
        "import sys, rdmm_lightning as r; assert 'rdmm_lightning.api' not in sys.modules; "
        "assert callable(r.register) and callable(r.warp); print(r.RegistrationResult.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "RegistrationResult"
    with pytest.raises(AttributeError):
        rl.no_such_thing  # noqa: B018


@pytest.mark.slow
def test_register_tensors_and_files(tmp_path):
    # Soft disks: their labels are level sets the similarity aligns (unlike Gaussian bumps of
    # different widths, whose 0.5 level sets LNCC, invariant to local contrast, does not match).
    source = soft_disk((24, 24), 0.25)
    target = soft_disk((24, 24), 0.3, center=0.52)
    labels = ((source > 0.5).long(), (target > 0.5).long())
    res = rl.register(
        source,
        target,
        "svf",
        tmp_path / "t",
        source_label=labels[0],
        target_label=labels[1],
        voxel_size=(1.5, 1.0),
        **FAST,
    )
    assert isinstance(res, rl.RegistrationResult) and res.phi_inv.shape == (1, 2, 24, 24)
    metrics = res.extras["metrics"]
    assert metrics["model"] == "svf" and metrics["dice"]["mean"] > metrics["dice_initial"]["mean"]
    assert res.extras["config"]["iterations"] == [3, 2]
    outputs = res.extras["outputs"]
    assert outputs.warped.shape == (24, 24)
    np.testing.assert_allclose(outputs.warped.affine[:2, :2], np.diag([1.5, 1.0]))
    assert (tmp_path / "t" / "warped.nii.gz").is_file()
    np.testing.assert_allclose(
        read_image(tmp_path / "t" / "warped.nii.gz").data.numpy(),
        outputs.warped.data.numpy(),
        atol=1e-6,
    )

    # a batch of two pairs: one call, metrics per item, no files
    batch = rl.register(
        torch.stack([source, target])[:, None],
        torch.stack([target, source])[:, None],
        model="lddmm",
        source_label=torch.stack(labels)[:, None],
        target_label=torch.stack(labels[::-1])[:, None],
        **FAST,
    )
    assert batch.phi_inv.shape == (2, 2, 24, 24)
    assert len(batch.extras["metrics"]["negative_jacobian_voxels"]) == 2
    assert len(batch.extras["metrics"]["dice"]["mean"]) == 2
    with pytest.raises(ValueError, match="out_dir"):
        rl.register(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), out_dir=tmp_path / "b")


def test_register_files_and_warp(tmp_path):
    paths = write_pair(tmp_path / "in", 3)
    res = rl.register(
        paths["source"],
        paths["target"],
        model="affine",
        out_dir=tmp_path / "out",
        affine_options={"iterations": [5], "scales": [1.0]},
    )
    assert res.model == "affine" and res.affine.shape == (1, 3, 4)
    pair = res.extras["pair"]
    assert res.phi_inv.shape[2:] == pair.working_shape == pair.target_volume.shape

    # warp a source-space image into the target grid: same as warped.nii.gz
    vol = rl.warp(tmp_path / "out", paths["source"], out=tmp_path / "w.nii.gz")
    assert isinstance(vol, Volume) and (tmp_path / "w.nii.gz").is_file()
    ref = read_image(tmp_path / "out" / "warped.nii.gz").data
    np.testing.assert_allclose(vol.data.numpy(), ref.numpy(), atol=1e-5 * float(ref.abs().max()))
    lab = rl.warp(tmp_path / "out", paths["source_label"], labels=True)
    assert lab.data.dtype == torch.int64 and lab.file_dtype == "int16"

    # points: target -> source and back, LPS by default; RAS on request
    tgt = pair.target_volume
    centre = (tgt.affine @ np.r_[(np.array(tgt.shape) - 1) / 2.0, 1.0])[:3]
    ras = centre[None] + np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 1.5]])
    lps = ras * np.array([-1.0, -1.0, 1.0])
    q = rl.warp(tmp_path / "out", points=lps)
    back = rl.warp(tmp_path / "out", points=q, inverse=True)
    np.testing.assert_allclose(back, lps, atol=0.02)
    q_ras = rl.warp(tmp_path / "out", points=ras, coordinates="ras")
    np.testing.assert_allclose(q_ras * np.array([-1.0, -1.0, 1.0]), q, atol=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        rl.warp(tmp_path / "out")
    with pytest.raises(ValueError, match="unknown option 'iteration'"):
        rl.register(paths["source"], paths["target"], iteration=3)
