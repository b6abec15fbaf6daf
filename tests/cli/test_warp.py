"""``rdmm warp`` on a registration folder written from a known map (no optimiser needed)."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.cli.main import main
from rdmm_lightning.grid import index_to_world
from rdmm_lightning.io import Volume, read_image
from rdmm_lightning.pipeline.outputs import write_registration_outputs
from rdmm_lightning.pipeline.pair import prepare_pair
from rdmm_lightning.pipeline.transform import label_like_values
from tests.io.geometry import lps, sitk_array
from tests.pipeline.helpers import known_result, write_pair


@pytest.fixture(scope="module", params=[3, 2], ids=["3d", "2d"])
def reg(request, tmp_path_factory):
    dim = request.param
    folder = tmp_path_factory.mktemp(f"warp{dim}d")
    paths = write_pair(folder / "in", dim)
    pair = prepare_pair(paths["source"], paths["target"], source_label=paths["source_label"])
    write_registration_outputs(folder / "reg", pair, known_result(pair, "svf"))
    return dim, paths, pair, folder / "reg"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_warp_image_and_labels(reg, tmp_path, capsys):
    dim, paths, _, transform = reg
    out = tmp_path / "w.nii.gz"
    assert (
        main(
            ["warp", "--transform", str(transform), "--moving", str(paths["source"])]
            + ["--out", str(out)]
        )
        == 0
    )
    assert str(out) in capsys.readouterr().out
    # the same field read back from float32: equal up to rounding
    ref = read_image(transform / "warped.nii.gz").data.numpy()
    np.testing.assert_allclose(read_image(out).data.numpy(), ref, atol=1e-5 * np.abs(ref).max())
    lab = tmp_path / "sub" / "l.nii.gz"
    argv = ["warp", "--transform", str(transform), "--moving", str(paths["source_label"])]
    assert main(argv + ["--out", str(lab), "--labels"]) == 0
    img = nib.load(lab)
    assert img.get_data_dtype() == np.int16
    ref = np.asanyarray(nib.load(transform / "warped_label.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), ref)
    np.testing.assert_allclose(img.affine, nib.load(paths["target"]).affine, atol=1e-4)


def test_warp_inverse_image(reg, tmp_path):
    """--inverse: a target-space image into the source grid, as SimpleITK does it."""
    dim, paths, _, transform = reg
    out = tmp_path / "inv.nii.gz"
    argv = ["warp", "--transform", str(transform), "--moving", str(paths["target"])]
    assert main(argv + ["--out", str(out), "--inverse"]) == 0
    field = sitk.ReadImage(str(transform / "inverse_displacement.nii.gz"))
    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    source = sitk.ReadImage(str(paths["source"]))
    target = sitk.ReadImage(str(paths["target"]))
    itk = sitk_array(sitk.Resample(target, source, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat64))
    ours = read_image(out)
    np.testing.assert_allclose(ours.affine, nib.load(paths["source"]).affine, atol=1e-4)
    assert np.abs(ours.data[0].numpy() - itk).max() < 1e-5 * np.abs(itk).max()


def _write_csv(path, rows, header):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_warp_points_round_trip(reg, tmp_path):
    """Target points -> source points (displacement.nii.gz, as SimpleITK maps them), and back
    with --inverse (inverse_displacement.nii.gz)."""
    dim, paths, pair, transform = reg
    tgt = pair.target_volume
    rng = np.random.default_rng(1)
    # the middle half of the target: their source positions lie inside the source grid
    idx = (0.25 + 0.5 * rng.random((12, dim))) * (np.array(tgt.shape) - 1)
    p_lps = lps(index_to_world(idx, tgt.affine))
    axes = ["x", "y", "z"][:dim]
    _write_csv(tmp_path / "p.csv", [[f"pt{i}", *p] for i, p in enumerate(p_lps)], ["name", *axes])
    base = ["warp", "--transform", str(transform)]
    assert main(base + ["--points", str(tmp_path / "p.csv"), "--out", str(tmp_path / "q.csv")]) == 0
    rows = _read_csv(tmp_path / "q.csv")
    assert [r["name"] for r in rows] == [f"pt{i}" for i in range(len(p_lps))]
    q = np.array([[float(r[a]) for a in axes] for r in rows])
    field = sitk.ReadImage(str(transform / "displacement.nii.gz"))
    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    itk = np.array([tx.TransformPoint(tuple(p)) for p in p_lps])
    np.testing.assert_allclose(q, itk, atol=1e-4)
    assert np.abs(q - p_lps).max() > 0.5  # the map really moves the points

    argv = base + ["--points", str(tmp_path / "q.csv"), "--out", str(tmp_path / "back.csv")]
    assert main(argv + ["--inverse"]) == 0
    back = np.array([[float(r[a]) for a in axes] for r in _read_csv(tmp_path / "back.csv")])
    err = np.abs(back - p_lps).max()
    print(f"{dim}D: target -> source -> target with warp --points: max error {err:.2e} mm")
    assert err < 0.05


def test_user_errors(reg, tmp_path, capsys):
    dim, paths, _, transform = reg
    t = ["warp", "--transform", str(transform)]
    out = tmp_path / "o.nii.gz"
    cases = [
        (["warp", "--transform", str(tmp_path / "nope"), "--moving", str(paths["source"])], "nope"),
        (t + ["--moving", str(tmp_path / "missing.nii.gz")], "missing.nii.gz"),
        (t + ["--moving", str(paths["source"]), "--labels"], "non-integer"),
        (t + ["--points", str(tmp_path / "none.csv"), "--labels"], "--labels"),
    ]
    for argv, needle in cases:
        assert main(argv + ["--out", str(out)]) == 2, argv
        assert needle in _one_line_error(capsys)
    cases = [
        (t + ["--points", str(tmp_path / "none.csv"), "--out", str(tmp_path / "q.csv")], "none"),
        (t + ["--points", str(tmp_path / "none.csv"), "--out", str(out)], "o.nii.gz"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        assert needle in _one_line_error(capsys)
    assert main(t + ["--moving", str(paths["source"]), "--out", str(tmp_path / "o.txt")]) == 2
    assert "o.txt" in _one_line_error(capsys)
    _write_csv(tmp_path / "xy.csv", [[1.0, 2.0]], ["x", "y"])
    if dim == 3:
        argv = t + ["--points", str(tmp_path / "xy.csv"), "--out", str(tmp_path / "q.csv")]
        assert main(argv) == 2
        assert "x,y,z" in _one_line_error(capsys)
    _write_csv(tmp_path / "bad.csv", [["a", "b", "c"]], ["x", "y", "z"][:dim])
    assert main(t + ["--points", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "q.csv")]) == 2
    assert "line 2" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["xy.csv", "bad.csv"])
    with pytest.raises(SystemExit):  # argparse: --moving and --points are exclusive
        main(t + ["--moving", "a", "--points", "b", "--out", "c"])


def test_label_map_without_labels_warns(reg, tmp_path, capsys):
    """A label map warped without --labels: written (linear, float32) with a one-line warning
    that suggests --labels; an intensity image and --labels give none."""
    _, paths, _, transform = reg
    base = ["warp", "--transform", str(transform), "--out", str(tmp_path / "w.nii.gz")]
    assert main(base + ["--moving", str(paths["source_label"])]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("wrote")
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdmm warp: warning:"), err
    assert "source_label.nii.gz" in err[0] and "3 distinct values" in err[0]
    assert "--labels" in err[0]
    assert nib.load(tmp_path / "w.nii.gz").get_data_dtype() == np.float32
    # negative controls: the label map with --labels, and the (int16) intensity image
    assert main(base + ["--moving", str(paths["source_label"]), "--labels"]) == 0
    assert capsys.readouterr().err == ""
    assert main(base + ["--moving", str(paths["source"])]) == 0
    assert capsys.readouterr().err == ""


def _vol(data: torch.Tensor, file_dtype: str | None = None) -> Volume:
    return Volume(data.reshape(1, 8, 8, 8), np.eye(4), None, file_dtype)


def test_label_like_values():
    """Integer images with few or sparse distinct values look like label maps; intensities that
    fill their range, float images and many values do not."""
    gen = torch.Generator().manual_seed(0)
    lobes = torch.randint(0, 6, (512,), generator=gen)
    assert label_like_values(_vol(lobes)) == 6
    assert label_like_values(_vol(lobes.float(), "uint8")) == 6  # as read_image gives it
    codes = torch.tensor([0, 2, 41, 1000, 2035])[torch.randint(0, 5, (512,), generator=gen)]
    assert label_like_values(_vol(codes, "int16")) == 5  # sparse codes (FreeSurfer-like)
    sparse = torch.arange(0, 400, 4)[torch.randint(0, 100, (512,), generator=gen)]
    assert label_like_values(_vol(sparse)) == int(torch.unique(sparse).numel())
    # not label-like: 8-bit intensities filling their range, more than 256 values, floats
    gray = torch.randint(0, 256, (512,), generator=gen)
    assert torch.unique(gray).numel() > 64
    assert label_like_values(_vol(gray.float(), "uint8")) is None
    assert label_like_values(_vol(torch.arange(512))) is None
    assert label_like_values(_vol(lobes.float(), "float32")) is None
    assert label_like_values(_vol(lobes.float())) is None
