"""Options (config file, flags, overrides), region pre-weights and register_files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.optimize import LbfgsOptions
from rdmm_lightning.optimize.defaults import DEFAULT_SIGMAS
from rdmm_lightning.pipeline.config import (
    default_register_config,
    optimizer_arguments,
    resolve_register_config,
)
from rdmm_lightning.pipeline.pair import prepare_pair
from rdmm_lightning.pipeline.register import region_pre_weights
from rdmm_lightning.pipeline.run import register_files
from rdmm_lightning.shooting import SolverOptions
from tests.io.geometry import make_sitk, rot_z, sitk_array
from tests.pipeline.helpers import GEOMETRIES, anatomy, world_points, write_pair

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ixi"


def test_defaults_follow_the_optimisers():
    cfg = default_register_config()
    assert cfg["model"] == "rdmm" and cfg["similarity"] == "lncc"
    assert cfg["solver"] == {"method": "rk4", "num_steps": 10, "rtol": 1e-5, "atol": 1e-5,
                             "adjoint": False, "checkpoint": True, "max_cfl": 2.0,
                             "compile": False}  # fmt: skip
    assert cfg["iterations"] == [60, 40, 20] and cfg["affine_options"]["init"] == "com"
    for managed in ("pre_weights", "initial_map", "progress", "mask", "spacing"):
        assert managed not in cfg


@pytest.mark.parametrize("model", ["rdmm", "svf", "affine"])
def test_options_split_back_into_optimiser_arguments(model):
    """One key list: every option is a pipeline key or an optimiser argument, and the split
    gives only arguments the optimisers take (none of those the pipeline sets per pair)."""
    import inspect

    from rdmm_lightning.optimize import optimize_affine, optimize_deformable
    from rdmm_lightning.pipeline.config import PER_PAIR_ARGUMENTS, PIPELINE_KEYS

    cfg = resolve_register_config(None, [f"model={model}"])
    aff, deformable = optimizer_arguments(cfg)
    for fn, kwargs in ((optimize_affine, aff), (optimize_deformable, deformable)):
        accepted = set(inspect.signature(fn).parameters) - set(PER_PAIR_ARGUMENTS)
        assert set(kwargs) <= accepted, set(kwargs) - accepted
    if model != "affine":
        assert set(cfg) - set(PIPELINE_KEYS) <= set(deformable)
    assert not set(PER_PAIR_ARGUMENTS) & (set(cfg) | set(cfg["affine_options"]))


def test_precedence_and_model_defaults(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model: svf\nenergy_weight: 2.0\nsolver: {num_steps: 7}\n")
    cfg = resolve_register_config(
        yaml, ["energy_weight=3", "similarity_kwargs.window=5"], {"model": "lddmm", "device": None}
    )
    assert cfg["model"] == "lddmm" and cfg["energy_weight"] == 3 and cfg["solver"]["num_steps"] == 7
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"  # "auto", resolved
    assert cfg["device"] == expected_device and cfg["similarity_kwargs"] == {"window": 5}
    assert cfg["sigmas"] == list(DEFAULT_SIGMAS) and cfg["kernel_weights"] is not None
    rdmm = resolve_register_config(None, (), {"model": "rdmm"})
    assert rdmm["kernel_weights"] is None and rdmm["initial_h2"] == [0.1, 0.3, 0.3, 0.3]
    pre = resolve_register_config(
        {"regularizer": "predefined", "region_mask": "m.nii.gz"},
        ["sigmas=[0.1,0.2]", "region.inside=[1,0]", "region.outside=[0,1]"],
    )
    assert pre["sigmas"] == [0.1, 0.2]
    pre = resolve_register_config({"regularizer": "predefined", "region_mask": "m.nii.gz"})
    assert pre["sigmas"] == [0.04, 0.06, 0.08, 0.2]
    aff, deformable = optimizer_arguments(cfg)
    assert isinstance(deformable["solver"], SolverOptions) and deformable["solver"].num_steps == 7
    assert isinstance(aff["lbfgs"], LbfgsOptions) and aff["similarity"] == "lncc"
    assert aff["similarity_kwargs"] == {"window": 5}
    assert "region" not in deformable and "device" not in deformable
    aff, deformable = optimizer_arguments(resolve_register_config(None, (), {"model": "affine"}))
    assert deformable == {}


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["nope=1"], "unknown option 'nope' (override)"),
        (["affine_options.nope=1"], "'affine_options.nope'"),
        (["energy_weight=abc"], "'energy_weight' must be a number"),
        (["solver=5"], "group of options"),
        (["model=vxm"], "'model' must be one of"),
        (["similarity=dice"], "'similarity' must be one of"),
        (["device=tpu"], "'device'"),
        (["max_time=0"], "max_time"),
        (["regularizer=predefined"], "region mask"),
        (["model=lddmm", "region_mask=m.nii"], "only; got model"),
        (["model=affine", "affine=false"], "affine=true"),
        (["oops"], "key=value"),
        (["kernel_weights=[1,1,1,1]"], "'kernel_weights' applies to svf/lddmm"),
        (["initial_h2=[1,1]"], "'initial_h2' needs one entry per sigma (4"),
        (["regularizer=predefined", "region_mask=m.nii", "sigmas=[0.1]"], "'region.inside'"),
    ],
)
def test_bad_options(overrides, needle):
    with pytest.raises(ValueError) as info:
        resolve_register_config(None, overrides)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_config_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "keys.yaml").write_text("lbfgs:\n  history: 3\n")
    for name, needle in (
        ("list.yaml", "mapping"),
        ("keys.yaml", r"'lbfgs.history' \(in .*keys.yaml\)"),
    ):
        with pytest.raises(ValueError, match=needle):
            resolve_register_config(tmp_path / name)
    with pytest.raises(ValueError, match="unknown option 'colour' \\(argument\\)"):
        resolve_register_config(None, (), {"colour": "red"})


def test_region_pre_weights(tmp_path):
    paths = write_pair(tmp_path, 2)
    pair = prepare_pair(paths["source"], paths["target"], source_label=paths["source_label"])
    h = region_pre_weights(pair, paths["source_label"], [0.1, 0.4, 0.5, 0.0], [0, 0, 0, 1])
    assert h.shape == (1, 4, *pair.working_shape)
    torch.testing.assert_close(h.pow(2).sum(1), torch.ones(1, *pair.working_shape))
    inside = pair.source_label[:, 0] > 0
    torch.testing.assert_close(h[:, 0][inside] ** 2, torch.full_like(h[:, 0][inside], 0.1))
    assert bool((h[:, 3][~inside] == 1).all())
    with pytest.raises(ValueError, match="non-negative"):
        region_pre_weights(pair, paths["source_label"], [-1, 1], [0, 1])


def _write_moved_pair(folder: Path, angle: float, shift) -> tuple[dict[str, Path], np.ndarray]:
    """The 2D phantom pair of :func:`write_pair` without the bend, the target's anatomy moved
    by a known rigid transform: ``target(p) = source_anatomy(R p + shift)`` (LPS mm, ``R`` a
    rotation by ``angle`` degrees). Returns the paths and the true pull-back displacement
    ``R p + shift - p`` ``(2, *S_target)`` in LPS mm on the target grid."""
    paths = write_pair(folder, 2, deform=0.0)
    geom = GEOMETRIES[2][1]
    p = world_points(geom)
    q = np.einsum("ij,j...->i...", rot_z(angle, 2), p) + np.reshape(shift, (2, 1, 1))
    image, labels = anatomy(q)
    sitk.WriteImage(make_sitk(image, geom), str(paths["target"]))
    sitk.WriteImage(make_sitk(labels.astype(np.uint8), geom), str(paths["target_label"]))
    return paths, q - p


def test_register_files_affine(tmp_path):
    """A known rotation (10 degrees) and shift (1.5, -1) mm between the images is recovered:
    the written displacement matches the true one inside the object to 0.3 mm (the motion
    there is 0.7 to 3 mm; centre-of-mass start alone misses the rotation), and Dice rises."""
    paths, true_disp = _write_moved_pair(tmp_path / "in", 10.0, (1.5, -1.0))
    out = tmp_path / "out"
    metrics = register_files(
        paths["source"],
        paths["target"],
        out,
        model="affine",
        source_label=paths["source_label"],
        target_label=paths["target_label"],
        # NCC: on this tiny phantom LNCC (window 9) has its optimum at a shrunken map
        similarity="ncc",
        overrides=["affine_options.iterations=[40,40]", "affine_options.scales=[0.5,1.0]"],
        progress=False,
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["model"] == "affine" and metrics["negative_jacobian_voxels"] == 0
    field = sitk.ReadImage(str(out / "displacement.nii.gz"))
    disp = np.stack([sitk_array(sitk.VectorIndexSelectionCast(field, k)) for k in range(2)])
    inside = sitk_array(sitk.ReadImage(str(paths["target_label"]))) > 0
    err = np.linalg.norm(disp - true_disp, axis=0)[inside]
    moved = np.linalg.norm(true_disp, axis=0)[inside]
    before, after = metrics["dice_initial"]["mean"], metrics["dice"]["mean"]
    print(f"affine: |error| max {err.max():.3f} mm (motion mean {moved.mean():.2f}, max "
          f"{moved.max():.2f}), Dice {before:.3f} -> {after:.3f}")  # fmt: skip
    # observed (40 + 40 iterations): error max 0.08 mm, motion mean 1.9, max 2.95 mm, Dice
    # 0.670 -> 0.952; with 20 + 20 it stopped at 0.31 mm, Dice 0.949 (numpy 2.4, torchio 1.2,
    # SimpleITK 2.5.7 on an Intel Xeon, 2026-12-02)
    assert err.max() < 0.3 and moved.mean() > 1.5
    assert after > 0.9 and after > before + 0.15


@pytest.mark.data
@pytest.mark.slow
def test_ixi_pair_affine(tmp_path):
    """A real inter-subject pair (2 mm, 120 x 120 x 90, PSR orientation): affine on a reduced
    working grid; the outputs land on the full grids and Dice improves over no registration."""
    if not (DATA / "pairs_eval.csv").is_file():
        pytest.skip("IXI data not available")
    import csv

    from rdmm_lightning.io import read_image

    with open(DATA / "pairs_eval.csv", newline="") as f:
        row = next(csv.DictReader(f))
    src, tgt = DATA / row["source"], DATA / row["target"]
    metrics = register_files(
        src,
        tgt,
        tmp_path / "ixi",
        model="affine",
        source_label=DATA / row["source_label"],
        target_label=DATA / row["target_label"],
        overrides=[
            "working_shape=[60,60,45]",
            "affine_options.iterations=[30,20]",
            "affine_options.scales=[0.5,1.0]",
        ],
        progress=False,
    )
    print("IXI affine:", metrics["dice_initial"]["mean"], "->", metrics["dice"]["mean"])
    assert metrics["dice"]["mean"] > metrics["dice_initial"]["mean"] + 0.05
    field = sitk.ReadImage(str(tmp_path / "ixi" / "displacement.nii.gz"))
    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    itk = sitk.Resample(sitk.ReadImage(str(src)), sitk.ReadImage(str(tgt)), tx, sitk.sitkLinear)
    ours = read_image(tmp_path / "ixi" / "warped.nii.gz").data[0].numpy()
    assert np.abs(sitk_array(sitk.Cast(itk, sitk.sitkFloat32)) - ours).max() < 1e-3 * 255


FAST_2D = ["iterations=[2,1]", "scales=[0.5,1.0]", "affine_options.iterations=[2]",
           "affine_options.scales=[1.0]", "solver.num_steps=4"]  # fmt: skip


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["iterations=[10,5]"], "iterations must be a non-negative int or one per scale (3"),
        (["affine_options.iterations=[1,2]"], "affine_options: iterations must be"),
        (["similarity_kwargs.wndow=5"], "unexpected keyword argument 'wndow'"),
        (["lbfgs.history_size=0"], "lbfgs history_size must be >= 1"),
        (["solver.num_steps=0"], "solver num_steps must be >= 1"),
        (["scales=[1.0,0.5]", "iterations=3"], "sorted coarse to fine"),
        (["model=svf", "kernel_weights=[1,1]", "sigmas=[0.1]"], "kernel_weights"),
    ],
)
def test_every_option_is_checked_before_any_work(tmp_path, capsys, overrides, needle):
    """Wrong options fail at once: no stage has run (no progress line), nothing is written."""
    paths = write_pair(tmp_path / "pair", 2)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        register_files(paths["source"], paths["target"], out, overrides=overrides)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert capsys.readouterr().err == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pair"]


def test_metrics_record_stages_and_outputs_share_permissions(tmp_path):
    """metrics.json records per stage and scale what ran and why it ended; every output file,
    overview.png included, gets the permissions the umask gives a new file."""
    paths = write_pair(tmp_path / "pair", 2)
    old = os.umask(0o027)
    try:
        metrics = register_files(
            paths["source"], paths["target"], tmp_path / "out", model="svf",
            overrides=FAST_2D, max_time=600.0, progress=False,
        )  # fmt: skip
    finally:
        os.umask(old)
    stages = metrics["stages"]
    assert [(r["stage"], r["scale"], r["planned"]) for r in stages] == [
        ("affine", 1.0, 2), ("svf", 0.5, 2), ("svf", 1.0, 1)
    ]  # fmt: skip
    assert all(r["stopped"] in ("iterations", "evaluations", "converged") for r in stages)
    assert all(0 < r["iterations"] <= r["planned"] for r in stages)
    assert metrics["complete"] is True and metrics["requested_model"] == "svf"
    limit = metrics["time_limit"]
    assert limit["max_time_s"] == 600.0 and limit["write_reserve_s"] >= 1.5
    assert limit["elapsed_before_writing_s"] > 0  # recorded (no wall-clock bound in a test)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["stages"] == stages and on_disk["time_limit"] == limit
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert "overview.png" in modes and set(modes.values()) == {0o640}, modes
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


def test_a_held_output_folder_is_refused(tmp_path, capsys):
    """While another live process holds the folder's lock, a second command refuses at once
    (one line, exit 2) and writes nothing."""
    from rdmm_lightning.cli.main import main
    from rdmm_lightning.pipeline.atomic import lock_path

    paths = write_pair(tmp_path / "pair", 2)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)  # fmt: skip
    try:
        lock_path(out).write_text(f"{holder.pid}\n")
        argv = ["register", str(paths["source"]), str(paths["target"]), "--out", str(out)]
        assert main(argv + FAST_2D) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"another rdmm command (pid {holder.pid})" in err
        assert "[affine]" not in err and not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert main(argv + FAST_2D) == 0  # the holder is gone: its stale lock is taken over
    assert (out / "metrics.json").exists() and not lock_path(out).exists()


def test_no_affine_stage_and_no_deformable_iteration_is_an_error(tmp_path, capsys):
    """Without an affine stage, a deformable stage that ran 0 iterations registered nothing: a
    one-line error, no output folder (0.01 s is less than the time kept for writing)."""
    paths = write_pair(tmp_path / "pair", 2)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="nothing was registered: the svf stage ran 0 iterations"):
        register_files(paths["source"], paths["target"], out, model="svf", max_time=0.01,
                       overrides=FAST_2D + ["affine=false"], progress=False)  # fmt: skip
    assert not out.exists()
