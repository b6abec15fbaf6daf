"""``rdmm data align``: a pool of synthetic knee phantoms, two of them moved by known affine
transforms (in their headers, as scanner-space volumes differ), aligned to the template."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from rdmm_lightning.cli.main import main
from rdmm_lightning.synthetic.synth3d import write_synth3d_pool
from tests.io.geometry import rot_x, rot_z

MOVES = {"moved1": (-8.0, (-6.0, 4.0, -2.0)), "moved2": (6.0, (4.0, -5.0, 3.0))}
"""Subject -> (rotation about z in degrees, with half of it about x; translation in mm)."""


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _moved_copy(src: Path, dst: Path, degrees: float, shift) -> None:
    img = nib.load(str(src))
    move = np.eye(4)
    move[:3, :3] = rot_x(degrees / 2) @ rot_z(degrees)
    move[:3, 3] = shift
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), move @ img.affine), str(dst))


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """``pool.csv`` (columns path,label,subject,side,visit): the template phantom ``sub-0000``,
    ``moved1``/``moved2`` (moved copies of it) and an unmoved second phantom ``sub-0001``."""
    root = tmp_path_factory.mktemp("pool")
    csv_path = write_synth3d_pool(root, 2, shape=(32, 48, 48), sides=("left",))
    rows = _rows(csv_path)
    template = rows[0]
    for name, (degrees, shift) in MOVES.items():
        for column in ("path", "label"):
            src = root / template[column]
            _moved_copy(src, src.with_name(f"{name}.nii.gz"), degrees, shift)
        moved = dict(template, subject=name)
        moved.update(path=f"images/{name}.nii.gz", label=f"labels/{name}.nii.gz")
        rows.append(moved)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def _align(pool: Path, out: Path, *extra: str) -> int:
    argv = ["data", "align", str(pool), "--template", "sub-0000", "--out", str(out)]
    return main([*argv, "--threads", "1", *extra])


@pytest.fixture(scope="module")
def aligned(pool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "out"
    assert _align(pool, out) == 0
    return out


def _grid(img: sitk.Image) -> tuple:
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def _close(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and all(np.allclose(x, y, atol=1e-4) for x, y in zip(a[1:], b[1:]))


def test_dice_rises_and_outputs_lie_on_the_template_grid(pool, aligned):
    rows = {r["subject"]: r for r in _rows(aligned / "subjects.csv")}
    assert list(_rows(aligned / "subjects.csv")[0]) == [
        *_rows(pool)[0],
        "template_dice",
        "source_path",
    ]
    assert set(rows) == {"sub-0000", "sub-0001", *MOVES}
    template = sitk.ReadImage(str(pool.parent / "images" / "sub-0000_v0_left.nii.gz"))
    for name in MOVES:
        record = json.loads((aligned / "records" / f"{name}.json").read_text())
        # negative control: the moved copy does not overlap the template before alignment
        assert record["initial_dice"] < 0.3
        dice = float(rows[name]["template_dice"])
        assert dice > 0.75 and dice > record["initial_dice"] + 0.5
        assert dice == pytest.approx(record["template_dice"])
        assert rows[name]["source_path"] == str(pool.parent / "images" / f"{name}.nii.gz")
        source = sitk.ReadImage(rows[name]["source_path"])
        assert not _close(_grid(source), _grid(template))  # the inputs' headers differ
        for column in ("path", "label"):
            out = sitk.ReadImage(str(aligned / rows[name][column]))
            assert _close(_grid(out), _grid(template)), column
        label = sitk.ReadImage(str(aligned / rows[name]["label"]))
        assert label.GetPixelID() in (sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16)
        assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2, 3, 4}
    assert float(rows["sub-0000"]["template_dice"]) > 0.99
    info = json.loads((aligned / "align.json").read_text())
    assert info["template"]["subject"] == "sub-0000" and info["version"]
    assert info["register"]["model"] == "affine"
    assert info["register"]["spacing_mode"] == "physical"
    assert info["summary"]["aligned"] == 4 and info["summary"]["failed"] == 0


def test_resume_skips_done_volumes(pool, aligned, tmp_path, capsys):
    out = tmp_path / "out"
    os.makedirs(out)
    for sub in ("images", "labels", "records"):
        os.makedirs(out / sub)
    for name in os.listdir(aligned):
        if name.endswith(".json"):
            (out / name).write_bytes((aligned / name).read_bytes())
    for name in ("sub-0000_v0_left", "moved1"):  # done earlier
        for sub, suffix in (("images", ".nii.gz"), ("labels", ".nii.gz"), ("records", ".json")):
            (out / sub / f"{name}{suffix}").write_bytes(
                (aligned / sub / f"{name}{suffix}").read_bytes()
            )
    # killed before its record: aligned again
    (out / "images" / "moved2.nii.gz").write_bytes(b"partial")
    before = (out / "records" / "moved1.json").stat().st_mtime_ns
    capsys.readouterr()
    assert _align(pool, out) == 0
    captured = capsys.readouterr()
    assert "2 aligned, 2 skipped" in captured.out
    assert captured.err.count("done earlier, skipped") == 2
    assert (out / "records" / "moved1.json").stat().st_mtime_ns == before
    assert sitk.ReadImage(str(out / "images" / "moved2.nii.gz")).GetSize() == (32, 48, 48)
    assert len(_rows(out / "subjects.csv")) == 4
    # a rerun of a finished folder does nothing
    assert _align(pool, out) == 0
    assert "0 aligned, 4 skipped" in capsys.readouterr().out


def test_exclude_drops_the_subjects_of_the_pairs(pool, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    root = pool.parent
    pairs.write_text(
        f"source,target\n{root / 'images' / 'moved1.nii.gz'},"
        f"{root / 'images' / 'sub-0001_v0_left.nii.gz'}\n"
    )
    out = tmp_path / "out"
    argv = ["--exclude", str(pairs), "--max-time-per-volume", "30"]
    assert _align(pool, out, *argv) == 0
    assert {r["subject"] for r in _rows(out / "subjects.csv")} == {"sub-0000", "moved2"}
    assert "2 excluded" in capsys.readouterr().out
    # the template must not be an excluded subject
    pairs.write_text(f"source,target\n{root / 'images' / 'sub-0000_v0_left.nii.gz'},")
    pairs.write_text(pairs.read_text() + f"{root / 'images' / 'moved2.nii.gz'}\n")
    assert _align(pool, tmp_path / "other", "--exclude", str(pairs)) == 2
    assert "is in --exclude" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_user_errors_are_one_line_and_write_nothing(pool, aligned, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["--template", "nobody"], "neither a subject of the pool nor a file"),
        (["--label-column", "seg"], "no column 'seg' (--label-column)"),
        (["--exclude", str(tmp_path / "missing.csv")], "--exclude"),
        (["--max-time-per-volume", "0"], "--max-time-per-volume"),
    ]
    for extra, text in cases:
        assert _align(pool, out, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    assert main(["data", "align", str(tmp_path / "no.csv"), "--template", "x", "--out", str(out)])
    assert "pool CSV not found" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text("path,subject\nimages/none.nii.gz,s1\n")
    assert main(["data", "align", str(broken), "--template", "s1", "--out", str(out)]) == 2
    assert "path file not found" in capsys.readouterr().err
    # resuming with another template is refused
    argv = ["data", "align", str(pool), "--out", str(aligned), "--threads", "1"]
    assert main([*argv, "--template", "moved2"]) == 2
    assert "aligned earlier with another" in capsys.readouterr().err


def test_pairs_on_aligned_volumes_feed_the_data_module(pool, aligned, tmp_path, capsys):
    from datamodules import PairDataModule

    out = tmp_path / "out"
    shutil.copytree(aligned, out)
    root = pool.parent
    pairs = tmp_path / "pairs_eval.csv"
    pairs.write_text(
        "source,target,source_label,target_label\n"
        "images/moved1.nii.gz,images/sub-0000_v0_left.nii.gz,"
        "labels/moved1.nii.gz,labels/sub-0000_v0_left.nii.gz\n"
    )
    shutil.copy(pairs, root / "pairs_eval.csv")
    argv = ["--pairs", "pairs_eval.csv", "--data-dir", str(root)]
    assert _align(pool, out, *argv) == 0  # resumed: nothing aligned again
    assert "0 aligned, 4 skipped" in capsys.readouterr().out
    written = _rows(out / "pairs_eval.csv")
    assert written == [
        {
            "source": "images/moved1.nii.gz",
            "target": "images/sub-0000_v0_left.nii.gz",
            "source_label": "labels/moved1.nii.gz",
            "target_label": "labels/sub-0000_v0_left.nii.gz",
        }
    ]
    options = dict(pool="subjects.csv", path_column="path", label_column="label")
    data = PairDataModule(data_dir=str(out), val_pairs="pairs_eval.csv", **options)
    data.setup("fit")
    assert len(data.val_set) == 1
    assert len(data.train_set) == 2  # the pair's volumes are left out of training
    kept = PairDataModule(
        data_dir=str(out), val_pairs="pairs_eval.csv", exclude_eval_volumes=False, **options
    )
    kept.setup("fit")
    assert len(kept.train_set) == 4
    # a pair of volumes outside the pool is refused before any work
    other = tmp_path / "other.csv"
    other.write_text(f"source,target\n{root / 'images' / 'moved1.nii.gz'},{pairs}\n")
    assert _align(pool, out, "--pairs", str(other)) == 2
    assert "is not a volume of the pool" in capsys.readouterr().err
