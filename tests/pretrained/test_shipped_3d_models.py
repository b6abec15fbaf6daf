"""Every shipped 3D model through ``rdmm infer`` on a head phantom stored in another voxel order,
spacing and size than its training grid: the recorded preprocessing and the affine stage bring
any such pair in, and the outputs lie on the target's own grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from rdmm_lightning.cli.main import main
from rdmm_lightning.pretrained.registry import list_models
from rdmm_lightning.synthetic.nifti import save_nifti

MODELS_3D = [card.name for card in list_models() if len(card.image_shape) == 3]


def _head(shape, affine, centre_mm, scale) -> tuple[np.ndarray, np.ndarray]:
    """A T1-like head phantom on a grid: scalp shell, brain, ventricles (labels 1-3)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = idx @ affine[:3, :3].T + affine[:3, 3] - np.asarray(centre_mm)
    r = np.sqrt(((world / (scale * np.array([70.0, 85.0, 65.0]))) ** 2).sum(-1))
    vent = np.sqrt(
        (((world - [8.0, 0.0, 5.0]) / (scale * np.array([8.0, 20.0, 10.0]))) ** 2).sum(-1)
    )
    label = np.zeros(shape, np.int16)
    label[r < 1.0] = 1
    label[r < 0.85] = 2
    label[vent < 1.0] = 3
    image = np.choose(label, [0.0, 0.9, 0.6, 0.2]).astype(np.float32)
    return image * 100.0, label


@pytest.mark.skipif(not MODELS_3D, reason="no 3D model ships")
@pytest.mark.parametrize("name", MODELS_3D)
def test_a_shipped_3d_model_registers_a_pair_of_any_orientation_spacing_and_size(name, tmp_path):
    ras = np.diag([1.6, 1.6, 1.6, 1.0])
    ras[:3, 3] = [-90.0, -110.0, -80.0]
    lps = np.diag([-1.9, -1.9, 1.9, 1.0])  # another orientation, spacing and size
    lps[:3, 3] = [95.0, 115.0, -85.0]
    src, src_label = _head((112, 136, 100), ras, (0.0, 0.0, 0.0), 1.0)
    tgt, tgt_label = _head((100, 118, 90), lps, (6.0, -4.0, 3.0), 1.08)
    paths = {
        "src": save_nifti(tmp_path / "src.nii.gz", src, ras),
        "tgt": save_nifti(tmp_path / "tgt.nii.gz", tgt, lps),
        "src_label": save_nifti(tmp_path / "src_label.nii.gz", src_label, ras),
        "tgt_label": save_nifti(tmp_path / "tgt_label.nii.gz", tgt_label, lps),
    }
    out = tmp_path / "out"
    argv = ["infer", "--checkpoint", name, str(paths["src"]), str(paths["tgt"]), "--out", str(out)]
    argv += ["--source-label", str(paths["src_label"]), "--target-label", str(paths["tgt_label"])]
    assert main(argv + ["--threads", "2"]) == 0
    warped = nib.load(out / "warped.nii.gz")
    assert warped.shape == tgt.shape
    np.testing.assert_allclose(warped.affine, lps, atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dice"]["mean"] > 0.85 > metrics["dice_initial"]["mean"], metrics["dice"]
    assert (out / "overview.png").is_file()
