"""``rdmm infer --affine opt|net|none``: affine-opt on the prepared pair before a deformable
network, on a tiny 3D phantom pair whose source is moved by a known affine transform."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import rdmm_lightning as rl
from rdmm_lightning.cli.main import main
from tests.io.geometry import rot_x, rot_z
from tests.models.helpers import loader, make_module, trainer
from tests.pipeline.helpers import anatomy
from tests.pipeline.test_outputs import _relative_error

SHAPE = (20, 20, 20)
TRAIN_SHAPE = (16, 16, 16)


def _grid_affine(spacing: float = 1.5) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(SHAPE) - 1) / 2.0
    return affine


def _world(affine: np.ndarray) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij"))
    return np.einsum("ij,j...->i...", affine[:3, :3], idx) + affine[:3, 3].reshape(3, 1, 1, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Target: the phantom on a centred grid; source: the same voxels with the header moved by
    a rotation (10 deg about z, 5 about x) and a shift (4, -3, 2) mm; label maps; checkpoints of a
    tiny svf-net (no affine stage), the same with an affine stage, and an affine net."""
    folder = tmp_path_factory.mktemp("infer_affine")
    target_affine = _grid_affine()
    move = np.eye(4)
    move[:3, :3] = rot_x(5.0) @ rot_z(10.0)
    move[:3, 3] = (4.0, -3.0, 2.0)
    image, labels = anatomy(_world(target_affine))
    paths = {}
    for name, affine in (("source", move @ target_affine), ("target", target_affine)):
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(paths[name]))
        paths[f"{name}_label"] = folder / f"{name}_label.nii.gz"
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(paths[f"{name}_label"]))
    for name, model, kw in (
        ("svf", "svf", {}),
        ("affine", "affine", {}),
        ("svf_affine", "svf", {"affine_net": {"features": (8, 8, 8), "hidden": 16}}),
        ("svf_prealigned", "svf", {"inference_affine": "opt"}),
    ):
        torch.manual_seed(0)
        module = make_module(model, TRAIN_SHAPE, log_figures=False, **kw)
        tr = trainer(folder, max_steps=1, limit_val_batches=0)
        tr.fit(module, loader(TRAIN_SHAPE, n=1, batch_size=1))
        paths[name] = folder / f"{name}.ckpt"
        tr.save_checkpoint(paths[name])
    return paths


def _infer(files, out, checkpoint="svf", *extra) -> int:
    argv = ["infer", "--checkpoint", str(files[checkpoint]), str(files["source"])]
    argv += [str(files["target"]), "--out", str(out), "--threads", "1"]
    argv += ["--source-label", str(files["source_label"])]
    return main([*argv, "--target-label", str(files["target_label"]), *extra])


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_affine_opt_before_the_network(files, tmp_path):
    """--affine opt: higher Dice than without an affine stage (the checkpoint's default, and
    --affine none), recorded in metrics.json with the affine stage's time; composite.h5 applied
    by SimpleITK reproduces warped.nii.gz and affine.mat holds the affine-opt matrix."""
    opt, default, none = tmp_path / "opt", tmp_path / "default", tmp_path / "none"
    assert _infer(files, opt, "svf", "--affine", "opt") == 0
    assert _infer(files, default) == 0
    assert _infer(files, none, "svf", "--affine", "none") == 0
    m_opt, m_default, m_none = _metrics(opt), _metrics(default), _metrics(none)
    assert m_default["config"]["affine"] == "none" and m_none["config"]["affine"] == "none"
    assert m_default["dice"]["mean"] == pytest.approx(m_none["dice"]["mean"])
    print(f"Dice: before {m_opt['dice_initial']['mean']:.3f}, --affine none "
          f"{m_none['dice']['mean']:.3f}, opt {m_opt['dice']['mean']:.3f}")  # fmt: skip
    assert m_opt["dice"]["mean"] > 0.85
    assert m_opt["dice"]["mean"] > m_none["dice"]["mean"] + 0.1  # negative control
    assert m_opt["config"]["affine"] == "opt"
    stages = m_opt["stages"]
    assert stages and {s["stage"] for s in stages} == {"affine"}
    affine_time = sum(s["time_s"] for s in stages)
    assert 0 < affine_time <= m_opt["time_s"]
    assert "stages" not in m_none
    # the files: composite.h5 reproduces warped.nii.gz; affine.mat is not the identity
    paths = {"source": files["source"], "target": files["target"]}
    assert _relative_error(paths, opt, sitk.ReadTransform(str(opt / "composite.h5"))) < 1e-5
    matrix = sitk.AffineTransform(sitk.ReadTransform(str(opt / "affine.mat"))).GetMatrix()
    assert not np.allclose(np.reshape(matrix, (3, 3)), np.eye(3), atol=1e-2)


def test_a_checkpoint_trained_on_a_prealigned_pool_runs_affine_opt_by_default(files, tmp_path):
    """``inference_affine="opt"`` (a network trained after ``rdmm data align``): affine-opt runs
    without --affine; --affine none still turns it off (negative control: lower Dice)."""
    default, none = tmp_path / "default", tmp_path / "none"
    assert _infer(files, default, "svf_prealigned") == 0
    assert _infer(files, none, "svf_prealigned", "--affine", "none") == 0
    m_default, m_none = _metrics(default), _metrics(none)
    assert m_default["config"]["affine"] == "opt" and m_none["config"]["affine"] == "none"
    assert m_default["dice"]["mean"] > m_none["dice"]["mean"] + 0.1


def test_inference_affine_is_checked():
    with pytest.raises(ValueError, match="inference_affine must be"):
        make_module("svf", TRAIN_SHAPE, inference_affine="sometimes")


def test_affine_stage_of_a_checkpoint_with_an_affine_net(files, tmp_path):
    """Default net; none (identity) and opt replace its output; each recorded."""
    outs = {}
    for stage in ("default", "net", "none", "opt"):
        outs[stage] = tmp_path / stage
        extra = [] if stage == "default" else ["--affine", stage]
        assert _infer(files, outs[stage], "svf_affine", *extra) == 0
    metrics = {k: _metrics(v) for k, v in outs.items()}
    assert metrics["default"]["config"]["affine"] == "net"
    assert metrics["default"]["dice"] == metrics["net"]["dice"]
    assert metrics["none"]["config"]["affine"] == "none"
    assert metrics["opt"]["dice"]["mean"] > metrics["none"]["dice"]["mean"] + 0.1
    none_mat = sitk.AffineTransform(sitk.ReadTransform(str(outs["none"] / "affine.mat")))
    assert np.allclose(none_mat.GetMatrix(), np.eye(3).ravel(), atol=1e-5)
    assert np.allclose(none_mat.GetTranslation(), 0.0, atol=1e-4)


def test_api_and_evaluate_take_the_affine_stage(files, tmp_path):
    result = rl.infer(files["source"], files["target"], files["svf"], affine="opt", threads=1)
    assert result.extras["metrics"]["config"]["affine"] == "opt"
    assert result.affine is not None and result.affine.shape == (1, 3, 4)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "source,target,source_label,target_label\n"
        f"{files['source']},{files['target']},{files['source_label']},{files['target_label']}\n"
    )
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(files["svf"]), "--pairs", str(pairs)]
    assert main([*argv, "--out", str(out), "--affine", "opt", "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["affine"] == "opt"
    assert summary["mean"]["dice_mean"] > 0.85


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_affine_option_errors(files, tmp_path, capsys):
    out = tmp_path / "x"
    assert _infer(files, out, "svf", "--affine", "net") == 2
    assert "no affine stage" in _error(capsys) and not out.exists()
    assert _infer(files, out, "affine", "--affine", "opt") == 2
    assert "--affine opt applies to svf/lddmm/rdmm" in _error(capsys)
    with pytest.raises(SystemExit) as exit_info:
        _infer(files, out, "svf", "--affine", "sometimes")
    assert exit_info.value.code == 2 and "--affine" in _error(capsys)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"source,target\n{files['source']},{files['target']}\n")
    argv = ["evaluate", "--model", "affine", "--pairs", str(pairs), "--out", str(out)]
    assert main([*argv, "--affine", "opt"]) == 2
    assert "--affine" in _error(capsys) and not out.exists()


def test_predict_takes_an_affine_matrix():
    """RegistrationNetModule.predict(affine_matrix=M): the result starts from M (its affine
    field is M, and zero momentum would give exactly the affine map); wrong shapes fail."""
    torch.manual_seed(0)
    module = make_module("svf", TRAIN_SHAPE, log_figures=False)
    batch = next(iter(loader(TRAIN_SHAPE, n=1, batch_size=1)))
    src, tgt = batch["source"], batch["target"]
    matrix = torch.eye(3, 4)[None]
    matrix[0, :, 3] = torch.tensor([0.05, -0.03, 0.02])
    with torch.no_grad():
        for p in module.net.parameters():
            p.zero_()  # zero momentum: the result is the initial map itself
    result = module.predict(src, tgt, affine_matrix=matrix)
    torch.testing.assert_close(result.affine, matrix)
    from rdmm_lightning.ops.affine import affine_to_map

    expected = affine_to_map(matrix, TRAIN_SHAPE, result.spacing)
    torch.testing.assert_close(result.phi_inv, expected, atol=1e-5, rtol=0)
    plain = module.predict(src, tgt)
    assert plain.affine is None and float((plain.phi_inv - expected).abs().max()) > 0.01
    with pytest.raises(ValueError, match="affine_matrix"):
        module.predict(src, tgt, affine_matrix=torch.eye(3)[None])
