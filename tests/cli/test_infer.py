"""``rdmm infer``: a trained checkpoint applied to image files of any size and spacing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.cli.main import main
from rdmm_lightning.synthetic.nifti import ras_affine, save_nifti
from tests.io.geometry import sitk_array
from tests.models.helpers import loader, make_module, trainer

TRAIN_SHAPE = (16, 16)


def _box(shape, lo, hi) -> np.ndarray:
    arr = np.zeros(shape, dtype=np.float32)
    arr[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1.0
    return arr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 2D pair on a 22 x 18 grid with anisotropic spacing (not the training grid), label maps,
    and checkpoints of an rdmm and an affine net trained for two steps on 16 x 16 boxes."""
    folder = tmp_path_factory.mktemp("infer")
    aff = ras_affine((1.0, 1.5), (-10.0, 5.0))
    src, tgt = _box((22, 18), (5, 4), (14, 11)), _box((22, 18), (7, 5), (16, 12))
    paths = {
        "source": save_nifti(folder / "src.nii.gz", src, aff),
        "target": save_nifti(folder / "tgt.nii.gz", tgt, aff),
        "source_label": save_nifti(folder / "src_lab.nii.gz", src.astype(np.int16), aff),
        "target_label": save_nifti(folder / "tgt_lab.nii.gz", tgt.astype(np.int16), aff),
    }
    for model in ("rdmm", "affine"):
        torch.manual_seed(0)
        module = make_module(model, TRAIN_SHAPE, log_figures=False, lr=1e-2)
        tr = trainer(folder, max_steps=2, limit_val_batches=0)
        tr.fit(module, loader(TRAIN_SHAPE, n=2, batch_size=1))
        paths[model] = folder / f"{model}.ckpt"
        tr.save_checkpoint(paths[model])
    return paths


def _argv(files, out, model="rdmm", labels=True, *extra):
    argv = ["infer", "--checkpoint", str(files[model]), str(files["source"]), str(files["target"])]
    argv += ["--out", str(out)]
    if labels:
        argv += ["--source-label", str(files["source_label"])]
        argv += ["--target-label", str(files["target_label"])]
    return argv + list(extra)


def _box_on_grid(shape, affine, lo_mm, hi_mm) -> np.ndarray:
    """Indicator (float32) of the voxels of a grid whose centres lie in a world box."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = idx @ affine[:2, :2].T + affine[:2, 3]
    return np.all((world >= lo_mm) & (world <= hi_mm), axis=-1).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_infer_rdmm_writes_outputs_on_the_input_grids(files, tmp_path, capsys):
    """The source on its own grid (other shape, spacing and origin than the target, covering
    its field of view): each file lies on the grid docs/architecture.md names; warped.nii.gz is the
    source resampled (SimpleITK) with displacement.nii.gz; the Dice values in metrics.json are
    those of the written label map and of the unregistered source label map. (The checkpoint
    is barely trained, so Dice need not improve.)"""
    src_aff = ras_affine((0.8, 1.2), (-12.1, 3.4))  # no voxel ties with the target grid
    box = _box_on_grid((32, 25), src_aff, (-5.5, 10.25), (3.5, 20.75))  # the fixture's box
    paths = dict(files)
    paths["source"] = save_nifti(tmp_path / "src.nii.gz", box, src_aff)
    paths["source_label"] = save_nifti(tmp_path / "src_lab.nii.gz", box.astype(np.int16), src_aff)
    out = tmp_path / "out"
    assert main(_argv(paths, out, "rdmm", True, "--num-steps", "2", "--refine-steps", "2")) == 0
    assert "mean Dice" in capsys.readouterr().out
    grids = {"target": nib.load(files["target"]), "source": nib.load(paths["source"])}
    on_grid = {"warped": "target", "warped_label": "target", "displacement": "target"}
    on_grid.update(jacobian="target", sigma_t1="target", inverse_displacement="source")
    on_grid.update(sigma_t0="source")
    for name, side in on_grid.items():
        img, ref = nib.load(out / f"{name}.nii.gz"), grids[side]
        assert img.shape[:2] == ref.shape, (name, img.shape, side)
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4, err_msg=name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "rdmm" and metrics["working_grid"]["shape"] == list(TRAIN_SHAPE)
    assert metrics["config"]["num_steps"] == 2 and metrics["config"]["refine_steps"] == 2
    assert (out / "overview.png").stat().st_size > 1000

    # warped = source resampled with the written displacement (ITK convention)
    field = sitk.Cast(sitk.ReadImage(str(out / "displacement.nii.gz")), sitk.sitkVectorFloat64)
    source, target = sitk.ReadImage(str(paths["source"])), sitk.ReadImage(str(files["target"]))
    tx = sitk.DisplacementFieldTransform(field)
    itk = sitk_array(sitk.Resample(source, target, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat64))
    warped = np.asarray(nib.load(out / "warped.nii.gz").dataobj, dtype=np.float64)
    assert np.abs(itk - warped).max() < 1e-5
    # the Dice values are those of the files: warped label map, and the source label map
    # sampled (nearest voxel) at the target voxels' positions
    tgt_lab = np.asarray(nib.load(files["target_label"]).dataobj) > 0
    warped_lab = np.asarray(nib.load(out / "warped_label.nii.gz").dataobj) > 0
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in tgt_lab.shape], indexing="ij"), -1)
    world = ijk @ grids["target"].affine[:2, :2].T + grids["target"].affine[:2, 3]
    nearest = np.rint((world - src_aff[:2, 3]) / np.diag(src_aff)[:2]).astype(int)
    initial = box.astype(bool)[nearest[..., 0], nearest[..., 1]]
    before, after = metrics["dice_initial"]["mean"], metrics["dice"]["mean"]
    print(f"infer: Dice {before:.4f} -> {after:.4f}")
    assert after == pytest.approx(_dice(warped_lab, tgt_lab), abs=1e-9)
    assert before == pytest.approx(_dice(initial, tgt_lab), abs=1e-9)
    assert warped_lab.sum() > 0 and not np.array_equal(warped_lab, initial)


def test_infer_affine_checkpoint(files, tmp_path):
    out = tmp_path / "aff"
    assert main(_argv(files, out, "affine", False)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "affine" and not (out / "sigma_t0.nii.gz").exists()


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_infer_errors_are_one_line(files, tmp_path, capsys):
    out = tmp_path / "never"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(files["rdmm"].read_bytes()[:1000])
    bad_checkpoints = {
        "checkpoint not found": tmp_path / "missing.ckpt",
        "truncated or corrupt": cut,
    }
    for message, ckpt in bad_checkpoints.items():
        argv = ["infer", "--checkpoint", str(ckpt), str(files["source"]), str(files["target"])]
        assert main(argv + ["--out", str(out)]) == 2
        assert message in _error(capsys)
    assert main(_argv(files, out, "rdmm", False, "--num-steps", "0")) == 2
    assert "--num-steps must be >= 1" in _error(capsys)
    assert main(_argv(files, out, "affine", False, "--refine-steps", "3")) == 2
    assert "not affine" in _error(capsys)
    missing = _argv(files, out, "rdmm", False)
    missing[4] = str(tmp_path / "nothing.nii.gz")
    assert main(missing) == 2
    assert "nothing.nii.gz" in _error(capsys)
    if not torch.cuda.is_available():
        assert main(_argv(files, out, "rdmm", False, "--device", "cuda")) == 2
        assert "CUDA is not available" in _error(capsys)
    assert not out.exists()


def test_infer_rejects_a_model_of_other_dimension(files, tmp_path, capsys):
    torch.manual_seed(0)
    module = make_module("svf", (8, 8, 8))
    tr = trainer(tmp_path)
    tr.strategy.connect(module)
    tr.save_checkpoint(tmp_path / "svf3d.ckpt")
    argv = ["infer", "--checkpoint", str(tmp_path / "svf3d.ckpt"), str(files["source"])]
    assert main(argv + [str(files["target"]), "--out", str(tmp_path / "o")]) == 2
    assert "trained on a 3D grid" in _error(capsys)


def _transposed(path, out):
    """The same 2D image stored with its two axes swapped (another voxel order, same world)."""
    img = nib.load(path)
    aff = img.affine.copy()
    aff[:, [0, 1]] = aff[:, [1, 0]]
    arr = np.asarray(img.dataobj).T
    return save_nifti(out, arr.astype(img.get_data_dtype()), aff)


def test_infer_replays_the_training_grid_so_voxel_order_does_not_matter(files, tmp_path):
    """A checkpoint trained on canonical (RAS+), resized volumes sees any input file on that
    grid: the same pair stored in another voxel order gives the same registration. Without the
    training config in the checkpoint the network sees the transposed images and differs."""
    ckpt = torch.load(files["rdmm"], map_location="cpu", weights_only=True)
    ckpt["rdmm_config"] = {"data": {"preprocessing": {"canonical": True, "resize_shape": [16, 16]}}}
    with_grid = tmp_path / "with_grid.ckpt"
    torch.save(ckpt, with_grid)
    swapped = {
        name: _transposed(files[name], tmp_path / f"t_{name}.nii.gz")
        for name in ("source", "target", "source_label", "target_label")
    }
    swapped.update(rdmm=files["rdmm"], with_grid=with_grid)

    def run(paths, model, name):
        out = tmp_path / name
        assert main(_argv(paths, out, model, True)) == 0
        warped = np.asarray(nib.load(out / "warped.nii.gz").dataobj, dtype=np.float64)
        return warped, json.loads((out / "metrics.json").read_text())

    ras, ras_metrics = run({**files, "with_grid": with_grid}, "with_grid", "ras")
    tra, tra_metrics = run(swapped, "with_grid", "tra")
    assert ras_metrics["working_grid"]["shape"] == [16, 16]
    np.testing.assert_allclose(tra.T, ras, atol=1e-4)
    assert abs(ras_metrics["dice"]["mean"] - tra_metrics["dice"]["mean"]) < 1e-6
    # the old behaviour (no training grid recorded): the network input is transposed
    plain_ras, _ = run(files, "rdmm", "plain_ras")
    plain_tra, _ = run(swapped, "rdmm", "plain_tra")
    assert np.abs(plain_tra.T - plain_ras).max() > 1e-3
