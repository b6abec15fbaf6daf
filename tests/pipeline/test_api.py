"""The notebook API: rdmm_lightning.register, rdmm_lightning.infer and rdmm_lightning.warp."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import rdmm_lightning as rl
from rdmm_lightning.cli.main import main
from rdmm_lightning.io import Volume, read_image
from rdmm_lightning.ops.grid import identity_map
from rdmm_lightning.pipeline.transform import LabelMapWarning
from tests.models.helpers import loader, make_module, trainer
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
        "assert callable(r.register) and callable(r.warp) and callable(r.infer); "
        "print(r.RegistrationResult.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "RegistrationResult"
    with pytest.raises(AttributeError):
        rl.no_such_thing  # noqa: B018


def test_public_names_and_version(capsys):
    """__all__ names resolve and dir() lists them with the subpackages, without importing
    anything heavy; ``rdmm --version`` prints the package version."""
    code = (
        "import sys, rdmm_lightning as r; names = dir(r); "
        "assert 'rdmm_lightning.api' not in sys.modules and 'torch' not in sys.modules; "
        "print(' '.join(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = out.stdout.split()
    assert set(rl.__all__) <= set(names)
    assert {"io", "ops", "pipeline", "shooting", "optimize"} <= set(names)
    assert not any(n.startswith("_") and n != "__version__" for n in names)
    from rdmm_lightning import api, io

    for name in rl.__all__:
        assert getattr(rl, name) is not None, name
    assert set(api.__all__) <= set(rl.__all__)
    assert rl.Volume is io.Volume and rl.read_image is io.read_image
    assert rl.ops.__name__ == "rdmm_lightning.ops"  # subpackages on first use
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"rdmm-lightning {rl.__version__}"


def test_result_repr_and_to_sitk_without_physical_space():
    """The repr is one short line (no tensor values); a result on bare tensors has no physical
    space for to_sitk()."""
    phi = identity_map((64, 64, 48), dtype=torch.float32)
    res = rl.RegistrationResult("lddmm", phi, torch.rand(1, 1, 64, 64, 48), (0.016, 0.016, 0.021))
    res.extras["metrics"] = {"dice": {"mean": 0.81234}, "negative_jacobian_voxels": 3}
    text = repr(res)
    print(text)
    assert text.startswith("RegistrationResult(model='lddmm'") and "\n" not in text
    assert "shape=(64, 64, 48)" in text and "dice=0.8123" in text and "tensor" not in text
    assert len(text) < 200
    with pytest.raises(ValueError, match="physical space"):
        res.to_sitk()


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
    assert "model='affine'" in repr(res) and "tensor" not in repr(res)

    # to_sitk(): the whole transform in one SimpleITK object, as composite.h5
    source = sitk.ReadImage(str(paths["source"]))
    target = sitk.ReadImage(str(paths["target"]))
    itk = sitk.Resample(source, target, res.to_sitk(), sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    ours = read_image(tmp_path / "out" / "warped.nii.gz").data[0].double().numpy()
    err = np.abs(sitk.GetArrayFromImage(itk).T - ours).max() / float(np.ptp(ours))
    assert err < 1e-5, err

    # warp a source-space image into the target grid: same as warped.nii.gz
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelMapWarning)  # an int16 image, but no label map
        vol = rl.warp(tmp_path / "out", paths["source"], out=tmp_path / "w.nii.gz")
    assert isinstance(vol, Volume) and (tmp_path / "w.nii.gz").is_file()
    ref = read_image(tmp_path / "out" / "warped.nii.gz").data
    np.testing.assert_allclose(vol.data.numpy(), ref.numpy(), atol=1e-5 * float(ref.abs().max()))
    lab = rl.warp(tmp_path / "out", paths["source_label"], labels=True)
    assert lab.data.dtype == torch.int64 and lab.file_dtype == "int16"
    with pytest.warns(LabelMapWarning, match="labels=True"):  # a label map, linearly
        linear = rl.warp(tmp_path / "out", paths["source_label"])
    assert torch.is_floating_point(linear.data)

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


def test_infer_is_rdmm_infer_in_python(tmp_path):
    torch.manual_seed(0)
    module = make_module("rdmm", (16, 16), log_figures=False)
    tr = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    tr.fit(module, loader((16, 16), n=1, batch_size=1))
    ckpt = tmp_path / "m.ckpt"
    tr.save_checkpoint(ckpt)
    paths = write_pair(tmp_path / "in", 2)
    labels = {"source_label": paths["source_label"], "target_label": paths["target_label"]}
    res = rl.infer(paths["source"], paths["target"], ckpt, tmp_path / "api", num_steps=1, **labels)
    assert isinstance(res, rl.RegistrationResult) and res.phi_inv.shape == (1, 2, 16, 16)
    metrics = res.extras["metrics"]
    assert metrics["config"]["checkpoint"] == str(ckpt) and metrics["config"]["num_steps"] == 1
    assert "dice" in metrics and res.extras["pair"].working_shape == (16, 16)

    argv = ["infer", "--checkpoint", str(ckpt), str(paths["source"]), str(paths["target"])]
    argv += ["--out", str(tmp_path / "cli"), "--num-steps", "1"]
    argv += ["--source-label", str(paths["source_label"])]
    assert main(argv + ["--target-label", str(paths["target_label"])]) == 0
    # ANTs' names for the pair: --moving = SOURCE, --fixed = TARGET
    argv = ["infer", "--checkpoint", str(ckpt), "--fixed", str(paths["target"])]
    argv += ["--moving", str(paths["source"]), "--out", str(tmp_path / "ants"), "--num-steps", "1"]
    assert main(argv) == 0
    for name in ("warped.nii.gz", "jacobian.nii.gz"):
        api, cli, ants = (read_image(tmp_path / d / name).data for d in ("api", "cli", "ants"))
        assert torch.equal(api, cli) and torch.equal(api, ants), name
    argv = ["infer", "--checkpoint", str(ckpt), str(paths["source"]), "--fixed", "t.nii.gz"]
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    # Volumes in, nothing written; option errors as for the command
    again = rl.infer(read_image(paths["source"]), read_image(paths["target"]), ckpt, num_steps=1)
    assert torch.equal(again.phi_inv, res.phi_inv)
    with pytest.raises(ValueError, match="refine_steps must be >= 0"):
        rl.infer(paths["source"], paths["target"], ckpt, refine_steps=-1)
