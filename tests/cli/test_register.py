"""``rdmm register`` end to end on tiny pairs with rotated, flipped, anisotropic and different
grids; a few optimiser iterations (key=value overrides)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.cli.main import main
from rdmm_lightning.cli.register import INCOMPLETE, exit_status
from rdmm_lightning.io import read_image
from rdmm_lightning.optimize.defaults import DEFAULT_RDMM_SIGMAS
from tests.io.geometry import sitk_array
from tests.pipeline.helpers import write_pair

FAST = [
    "iterations=[3,2]",
    "scales=[0.5,1.0]",
    "affine_options.iterations=[4]",
    "affine_options.scales=[1.0]",
    "solver.num_steps=4",
]
FILES = {
    "warped.nii.gz",
    "warped_label.nii.gz",
    "displacement.nii.gz",
    "inverse_displacement.nii.gz",
    "affine.mat",
    "composite.h5",
    "jacobian.nii.gz",
    "metrics.json",
    "overview.png",
}


@pytest.fixture(scope="module")
def pair3d(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("reg3d"), 3)


@pytest.fixture(scope="module")
def pair2d(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("reg2d"), 2)


def _labels(paths) -> list[str]:
    return [
        "--source-label",
        str(paths["source_label"]),
        "--target-label",
        str(paths["target_label"]),
    ]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_register_rdmm_3d(pair3d, tmp_path, capsys):
    out = tmp_path / "rdmm"
    argv = ["register", str(pair3d["source"]), str(pair3d["target"]), "--out", str(out)]
    assert main(argv + _labels(pair3d) + ["--model", "rdmm"] + FAST) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and str(out) in summary[0] and "rdmm" in summary[0]
    assert {p.name for p in out.iterdir()} == FILES | {"sigma_t0.nii.gz", "sigma_t1.nii.gz"}
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("negative_jacobian_voxels", "negative_jacobian_fraction", "folds", "time_s"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["model"] == "rdmm" and metrics["stopped"] is None
    assert set(metrics["dice"]["per_label"]) == {"1", "2"} and 0 < metrics["dice"]["mean"] <= 1
    # registration improves the overlap, and the deformable stage adds to the affine one (the
    # same affine stage alone, run with the same options, is deterministic)
    aff = tmp_path / "affine_only"
    argv_aff = ["register", str(pair3d["source"]), str(pair3d["target"]), "--out", str(aff)]
    assert main(argv_aff + _labels(pair3d) + ["--model", "affine"] + FAST[2:4]) == 0
    capsys.readouterr()
    before, after = metrics["dice_initial"]["mean"], metrics["dice"]["mean"]
    affine = json.loads((aff / "metrics.json").read_text())["dice"]["mean"]
    print(f"rdmm 3D: Dice {before:.4f} (identity) -> {affine:.4f} (affine) -> {after:.4f}")
    # observed: 0.7116 -> 0.7731 -> 0.8151; margins about half of each gain
    assert affine > before + 0.03 and after > affine + 0.02
    cfg = metrics["config"]
    assert cfg["iterations"] == [3, 2] and cfg["solver"]["num_steps"] == 4
    assert cfg["sigmas"] == list(DEFAULT_RDMM_SIGMAS) and cfg["model"] == "rdmm"

    # acceptance: SimpleITK resamples the source with displacement.nii.gz like warped.nii.gz
    field = sitk.Cast(sitk.ReadImage(str(out / "displacement.nii.gz")), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    source = sitk.ReadImage(str(pair3d["source"]))
    target = sitk.ReadImage(str(pair3d["target"]))
    itk = sitk_array(sitk.Resample(source, target, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat64))
    ours = read_image(out / "warped.nii.gz").data[0].double().numpy()
    rng = float(np.ptp(sitk_array(source)))
    err = np.abs(itk - ours).max() / rng
    print(f"rdmm 3D: max |SimpleITK - warped.nii.gz| / range = {err:.2e}")
    assert err < 1e-5
    # grids: target side and source side, as docs/architecture.md says
    tgt_aff, src_aff = nib.load(pair3d["target"]).affine, nib.load(pair3d["source"]).affine
    for name in ("warped", "warped_label", "displacement", "jacobian", "sigma_t1"):
        np.testing.assert_allclose(nib.load(out / f"{name}.nii.gz").affine, tgt_aff, atol=1e-4)
    for name in ("inverse_displacement", "sigma_t0"):
        np.testing.assert_allclose(nib.load(out / f"{name}.nii.gz").affine, src_aff, atol=1e-4)
    assert nib.load(out / "warped_label.nii.gz").get_data_dtype() == np.int16


@pytest.mark.slow
def test_register_config_file_and_precedence(pair2d, tmp_path, capsys):
    cfg = tmp_path / "opts.yaml"
    cfg.write_text(
        "model: lddmm\nsimilarity: ncc\nenergy_weight: 0.5\nsolver:\n  num_steps: 6\n"
        "iterations: [3, 2]\nscales: [0.5, 1.0]\naffine_options:\n  iterations: [4]\n"
        "  scales: [1.0]\n"
    )
    out = tmp_path / "out"
    argv = ["register", str(pair2d["source"]), str(pair2d["target"]), "--out", str(out)]
    argv += ["--config", str(cfg), "--model", "svf", "energy_weight=0.25"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    resolved = metrics["config"]
    assert metrics["model"] == "svf" and resolved["model"] == "svf"  # flag beats config
    assert resolved["similarity"] == "ncc" and resolved["solver"]["num_steps"] == 6
    assert resolved["energy_weight"] == 0.25  # key=value beats config
    assert resolved["kernel_weights"] == [0.1, 0.3, 0.3, 0.3]
    assert "dice" not in metrics and not (out / "sigma_t0.nii.gz").exists()
    assert nib.load(out / "warped.nii.gz").ndim == 2


@pytest.mark.slow
def test_register_predefined_regularizer(pair2d, tmp_path):
    """Lung-style predefined regularizer from a region mask in the source's space."""
    out = tmp_path / "pre"
    argv = ["register", str(pair2d["source"]), str(pair2d["target"]), "--out", str(out)]
    argv += ["--regularizer", "predefined", "--region-mask", str(pair2d["source_label"])]
    assert main(argv + FAST) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["sigmas"] == [0.04, 0.06, 0.08, 0.2]
    assert metrics["config"]["regularizer"] == "predefined"
    sigma0 = read_image(out / "sigma_t0.nii.gz").data
    inside = float(np.sqrt(0.1 * 0.04**2 + 0.4 * 0.06**2 + 0.5 * 0.08**2))
    # inside the mask sigma(x) is small, far outside it is 0.2 (smoothed at the border)
    assert float(sigma0.min()) < inside + 0.01 and float(sigma0.max()) > 0.19


@pytest.mark.slow
def test_register_affine_and_time_limit(pair2d, tmp_path, capsys):
    """A limit spent before the first svf iteration (0.05 s is less than the reserve kept for
    writing): never a silent svf result. The outputs are the affine registration, labelled so,
    with a WARNING line and exit code 3."""
    out = tmp_path / "aff"
    argv = ["register", str(pair2d["source"]), str(pair2d["target"]), "--out", str(out)]
    assert main(argv + ["--model", "affine", "affine_options.iterations=3"]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == "affine"
    capsys.readouterr()
    out = tmp_path / "timed"
    argv = ["register", str(pair2d["source"]), str(pair2d["target"]), "--out", str(out)]
    assert main(argv + ["--model", "svf", "--max-time", "0.05"]) == INCOMPLETE == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"] and "time limit" in metrics["stopped"]
    assert metrics["model"] == "affine" and metrics["requested_model"] == "svf"
    assert metrics["complete"] is False and not (out / "sigma_t0.nii.gz").exists()
    svf = [r for r in metrics["stages"] if r["stage"] == "svf"]
    assert len(svf) == 3 and sum(r["iterations"] for r in svf) == 0
    assert metrics["time_limit"]["max_time_s"] == 0.05
    captured = capsys.readouterr()
    warning = "rdmm register: WARNING: the svf stage ran 0 iterations (time limit): the outputs"
    assert warning in captured.err and "wrote" in captured.out
    # a complete run: exit 0; --strict turns an early stop into exit code 3 as well
    out = tmp_path / "strict"
    argv = ["register", str(pair2d["source"]), str(pair2d["target"]), "--out", str(out)]
    fast = ["--model", "svf", "iterations=[2,2,1]", "affine_options.iterations=2"]
    assert main(argv + fast + ["--strict"]) == 0
    assert json.loads((out / "metrics.json").read_text())["complete"] is True


def test_exit_status_and_strict(capsys):
    done = {"model": "svf", "requested_model": "svf", "complete": True, "stopped": None}
    early = dict(done, stopped="time limit of 9 s reached at svf scale 1, iteration 3")
    stages = [{"stage": "svf", "stopped": "non-finite", "iterations": 0}]
    empty = dict(early, model="affine", complete=False, stages=stages)
    assert exit_status(done, False, "rdmm x") == exit_status(done, True, "rdmm x") == 0
    assert exit_status(early, False, "rdmm x") == 0 and capsys.readouterr().err == ""
    assert exit_status(early, True, "rdmm x") == INCOMPLETE
    assert (
        capsys.readouterr().err
        == f"rdmm x: WARNING: stopped early (--strict): {early['stopped']}\n"
    )
    assert exit_status(empty, False, "rdmm x", "pair 2: ") == INCOMPLETE
    err = capsys.readouterr().err
    assert err.startswith("rdmm x: WARNING: pair 2: the svf stage ran 0 iterations (non-finite)")


def _save(path: Path, arr: np.ndarray, affine=None) -> str:
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), path)
    return str(path)


def test_user_errors(pair3d, tmp_path, capsys, monkeypatch):
    src, tgt = str(pair3d["source"]), str(pair3d["target"])
    bad = tmp_path / "bad"
    bad.mkdir()
    nan = np.random.rand(20, 22, 16).astype(np.float32)
    nan[3, 4, 5] = np.nan
    floats = np.random.rand(*nib.load(src).shape).astype(np.float32)
    paths = {
        "nan": _save(bad / "nan.nii.gz", nan, nib.load(tgt).affine),
        "float_label": _save(bad / "float_label.nii.gz", floats, nib.load(src).affine),
        "4d": _save(bad / "four_d.nii.gz", np.random.rand(8, 8, 8, 3).astype(np.float32)),
        "shifted_label": _save(
            bad / "shifted_label.nii.gz",
            np.zeros(nib.load(src).shape, np.int16),
            nib.load(src).affine @ np.diag([1.0, 1.0, 2.0, 1.0]),
        ),
        "corrupt": bad / "corrupt.nii.gz",
        "empty": bad / "empty.nii",
        "yaml": bad / "opts.yaml",
        "broken": bad / "broken.yaml",
    }
    paths["corrupt"].write_bytes(b"\x1f\x8b not really a gzipped NIfTI" * 10)
    paths["empty"].write_bytes(b"")
    paths["yaml"].write_text("iterations: 3\nnot_an_option: 1\n")
    paths["broken"].write_text("model: [unclosed\n")
    out = tmp_path / "out" / "nested"
    base = ["register", src, tgt, "--out", str(out)]
    cases = [
        (["register", str(bad / "missing.nii.gz"), tgt, "--out", str(out)], "missing.nii.gz"),
        (["register", src, paths["nan"], "--out", str(out)], "nan.nii.gz"),
        (base + ["--source-label", paths["float_label"]], "float_label.nii.gz"),
        (["register", paths["4d"], tgt, "--out", str(out)], "four_d.nii.gz"),
        (["register", str(paths["corrupt"]), tgt, "--out", str(out)], "corrupt.nii.gz"),
        (["register", src, str(paths["empty"]), "--out", str(out)], "empty.nii"),
        (base + ["--source-label", paths["shifted_label"]], "shifted_label.nii.gz"),
        (base + ["no_such_key=1"], "no_such_key"),
        (base + ["solver.nope=1"], "solver.nope"),
        (base + ["iterations=abc"], "iterations"),
        (base + ["--config", str(paths["yaml"])], "not_an_option"),
        (base + ["--config", str(paths["broken"])], "broken.yaml"),
        (base + ["--config", str(bad / "none.yaml")], "none.yaml"),
        (base + ["--regularizer", "predefined"], "region mask"),
        (base + ["--model", "svf", "--region-mask", str(pair3d["source_label"])], "rdmm"),
        (base + ["--region-mask", str(bad / "no_mask.nii.gz")], "no_mask.nii.gz"),
        (base + ["--max-time", "-1"], "--max-time"),
        (base + ["justaword"], "key=value"),
        (base + ["--model", "rdmm", "kernel_weights=[1,1,1,1]"] + FAST, "kernel_weights"),
    ]
    if not torch.cuda.is_available():
        cases.append((base + ["--device", "cuda"], "CUDA"))
    for argv, needle in cases:
        assert main(argv) == 2, argv
        message = _one_line_error(capsys)
        assert needle in message and message.startswith("rdmm register: error:"), message
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad"]
    # an output path that is an existing file
    assert main(["register", src, tgt, "--out", str(paths["yaml"])]) == 2
    assert "not a folder" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:  # argparse: unknown model name, one line too
        main(base + ["--model", "voxelmorph"])
    assert exc.value.code == 2
    message = _one_line_error(capsys)
    assert "--model" in message and "voxelmorph" in message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_register_on_cuda(pair3d, tmp_path):
    out = tmp_path / "cuda"
    argv = ["register", str(pair3d["source"]), str(pair3d["target"]), "--out", str(out)]
    assert main(argv + _labels(pair3d) + ["--device", "cuda"] + FAST) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["device"] == "cuda" and (out / "sigma_t1.nii.gz").is_file()


def test_fixed_moving_aliases(pair2d, tmp_path, capsys):
    """ANTs' names: --moving = SOURCE, --fixed = TARGET (same result as the positionals, overrides
    may follow); an image given both ways, or half of the pair, is a one-line error."""
    src, tgt = str(pair2d["source"]), str(pair2d["target"])
    fast = ["--model", "affine", "affine_options.iterations=[3]", "affine_options.scales=[1.0]"]
    by_name = ["register", "--fixed", tgt, "--out", str(tmp_path / "a"), "--moving", src]
    assert main(by_name + fast) == 0
    assert main(["register", src, tgt, "--out", str(tmp_path / "b")] + fast) == 0
    capsys.readouterr()
    a, b = (read_image(tmp_path / d / "warped.nii.gz").data for d in ("a", "b"))
    assert torch.equal(a, b)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["source"]["path"] == src and metrics["target"]["path"] == tgt
    assert metrics["config"]["affine_options"]["iterations"] == [3]

    out = ["--out", str(tmp_path / "c")]
    cases = [
        (["register", src, tgt, "--moving", src] + out, "not both"),
        (["register", src, "--fixed", tgt] + out, "not both"),
        (["register", "--moving", src, "--fixed", tgt, tgt] + out, "not both"),
        (["register", "--moving", src] + out, "--fixed is missing"),
        (["register", "--fixed", tgt, "iterations=[2]"] + out, "--moving is missing"),
        (["register", src] + out, "missing TARGET"),
        (["register"] + out, "missing SOURCE and TARGET"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        message = _one_line_error(capsys)
        assert needle in message and message.startswith("rdmm register: error:"), message
    assert not (tmp_path / "c").exists()
