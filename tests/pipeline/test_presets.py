"""The ``--preset`` option sets (``rdmm_lightning/presets/*.yaml``): every file loads and
validates, the precedence defaults < preset < config < flags < key=value, each preset holds the
settings of the benchmark or experiment it names, the files ship as package data found through
importlib.resources, and a registration records its preset in metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

import rdmm_lightning as rl
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.optimize.affine import AFFINE_SIMILARITY_DEFAULTS
from rdmm_lightning.options import Model, Preset, values
from rdmm_lightning.pipeline.config import (
    LUNG_REGION,
    config_yaml,
    default_register_config,
    load_preset,
    optimizer_arguments,
    resolve_register_config,
)
from rdmm_lightning.pipeline.pair import PERCENTILES
from rdmm_lightning.pipeline.run import register_files
from rdmm_lightning.presets import preset_summary, preset_text
from rdmm_lightning.synthetic.synth3d import generate_knee_phantom
from tests.pipeline.helpers import write_pair
from tests.wheel import build_wheel

PRESETS = values(Preset)
REPO = Path(__file__).resolve().parents[2]
FAST = ["iterations=[2,1]", "scales=[0.5,1.0]", "affine_options.iterations=[2]",
        "affine_options.scales=[1.0]", "solver.num_steps=4"]  # fmt: skip


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1}`` (free mappings such as similarity_kwargs
    too; empty ones have no key)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changed(cfg: dict, reference: dict) -> set[str]:
    """Keys (dotted) whose value differs between two resolved configs."""
    a, b = _flat(cfg), _flat(reference)
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_validates_and_is_used(name):
    """Each file: a ``# NAME: summary`` first line, keys of the schema, physical spacing; every
    value it sets is in the resolved config, for every model it allows."""
    text = preset_text(name)
    assert text.splitlines()[0].startswith(f"# {name}: ") and preset_summary(name)
    assert "\n" not in preset_summary(name)
    data = load_preset(name)
    assert data["spacing_mode"] == "physical"
    models = values(Model) if data.get("affine", True) else values(Model.deformable())
    for model in models:
        cfg = resolve_register_config(None, [f"model={model}"], {"preset": name})
        assert cfg["preset"] == name and cfg["model"] == model
        for key, value in _flat(data).items():
            resolved = _flat(cfg)
            assert resolved[key] == value, (name, model, key)
        assert yaml.safe_load(config_yaml(cfg)) == cfg


def test_a_preset_without_an_affine_stage_rejects_the_affine_model():
    with pytest.raises(ValueError, match="model 'affine' needs affine=true"):
        resolve_register_config(None, ["model=affine"], {"preset": "synthetic"})
    assert resolve_register_config(None, ["model=affine", "affine=true", "preset=synthetic"])


def test_precedence_defaults_preset_config_flags_overrides(tmp_path):
    knee = load_preset("knee")
    defaults = default_register_config()
    # the negative control: values the knee preset sets, unlike the defaults
    assert knee["similarity"] != defaults["similarity"]
    assert knee["spacing_mode"] != defaults["spacing_mode"]

    config = tmp_path / "c.yaml"
    config.write_text("preset: knee\nspacing_mode: parity\n")
    cfg = resolve_register_config(config, ["sigmas=[0.1,0.2,0.3,0.4]"])
    assert cfg["preset"] == "knee"
    assert cfg["spacing_mode"] == "parity"  # config over preset
    assert cfg["sigmas"] == [0.1, 0.2, 0.3, 0.4]  # key=value over preset
    assert cfg["similarity"] == knee["similarity"]  # not overridden: the preset's
    cfg = resolve_register_config(config, (), {"similarity": "lncc"})
    assert cfg["similarity"] == "lncc"  # flag over preset

    # config < flags < key=value for the same key, above the preset
    cfg = resolve_register_config(
        {"similarity": "ncc"}, ["similarity=ssd"], {"similarity": "lncc", "preset": "knee"}
    )
    assert cfg["similarity"] == "ssd"
    cfg = resolve_register_config({"similarity": "ncc"}, [], {"similarity": "lncc"})
    assert cfg["similarity"] == "lncc" and cfg["preset"] is None

    # the preset layers under the config whichever source names it
    config.write_text("energy_weight: 3.0\n")
    cfg = resolve_register_config(config, ["preset=knee"])
    assert cfg["energy_weight"] == 3.0 and cfg["similarity"] == knee["similarity"]
    # the last source that names a preset wins: key=value over argument over config
    config.write_text("preset: lung\n")
    assert resolve_register_config(config)["preset"] == "lung"
    assert resolve_register_config(config, (), {"preset": "brain"})["preset"] == "brain"
    assert resolve_register_config(config, ["preset=knee"], {"preset": "brain"})["preset"] == "knee"
    assert resolve_register_config(config, ["preset=null"])["preset"] is None
    assert (
        resolve_register_config(config, ["preset=null"])["sigmas"] != load_preset("lung")["sigmas"]
    )


@pytest.mark.parametrize(
    "config, overrides, explicit",
    [
        (None, ["preset=nope"], None),
        (None, (), {"preset": "Brain"}),
        ({"preset": "ixi"}, (), None),
    ],
)
def test_unknown_preset_is_one_line_listing_the_presets(config, overrides, explicit):
    with pytest.raises(ValueError) as info:
        resolve_register_config(config, overrides, explicit)
    message = str(info.value)
    assert "\n" not in message and message.startswith("unknown preset")
    assert all(name in message for name in PRESETS)


def test_option_enums_resolve_to_their_strings():
    cfg = resolve_register_config(None, (), {"preset": Preset.KNEE, "model": Model.SVF})
    assert type(cfg["preset"]) is str and type(cfg["model"]) is str
    assert yaml.safe_load(config_yaml(cfg)) == cfg and cfg["model"] == "svf"


def test_brain_is_the_ixi_benchmark():
    """The settings of benchmarks/ixi_opt.py, and nothing else changed from the defaults."""
    from benchmarks.ixi_opt import IXI_DEFORMABLE

    cfg = resolve_register_config(None, (), {"preset": "brain"})
    aff, deformable = optimizer_arguments(cfg)
    assert deformable["sigmas"] == list(IXI_DEFORMABLE["sigmas"])
    assert deformable["iterations"] == list(IXI_DEFORMABLE["iterations"])
    assert deformable["similarity"] == "lncc"
    assert deformable["similarity_kwargs"] == IXI_DEFORMABLE["similarity_kwargs"]
    # the benchmark's affine stage runs optimize_affine's defaults (LNCC, 9-voxel window)
    assert aff["similarity"] == "lncc"
    assert aff["similarity_kwargs"] == AFFINE_SIMILARITY_DEFAULTS["lncc"]
    # the benchmark's intensity mapping (0.5 and 99.5 percentiles) and spacing
    assert cfg["normalize"] == "percentile" and PERCENTILES == (0.5, 99.5)
    assert cfg["spacing_mode"] == "physical"
    assert _changed(cfg, resolve_register_config()) == {
        "preset",
        "spacing_mode",
        "similarity_kwargs.window",
        "affine_options.similarity",
        "affine_options.similarity_kwargs.window",
    }


def test_synthetic_is_the_synth2d_benchmark():
    """benchmarks/synth2d_opt.py: library defaults, no affine stage, images as generated; on
    the square 200x200 grid at 1 mm physical spacing is the benchmark's parity spacing."""
    cfg = resolve_register_config(None, (), {"preset": "synthetic"})
    assert _changed(cfg, resolve_register_config()) == {
        "preset",
        "spacing_mode",
        "normalize",
        "affine",
    }
    assert cfg["affine"] is False and cfg["normalize"] == "none"
    physical = domain_spacing((200, 200), "physical", (1.0, 1.0))
    assert physical == pytest.approx(domain_spacing((200, 200), "parity"))
    assert domain_spacing((200, 100), "physical", (1.0, 1.0)) != domain_spacing((200, 100))


def test_knee_is_the_library_stack_in_millimetres_with_mk_lncc():
    """The setting benchmarks/presets_vs_ants.py measured: the default kernel stack, physical
    spacing and multi-kernel LNCC, nothing else changed."""
    cfg = resolve_register_config(None, (), {"preset": "knee"})
    assert cfg["similarity"] == "mk-lncc" and cfg["spacing_mode"] == "physical"
    changed = _changed(cfg, resolve_register_config())
    affine = {"affine_options.similarity", "affine_options.similarity_kwargs.window"}
    assert changed - affine == {"preset", "spacing_mode", "similarity"}


def test_lung_uses_the_lung_region_setting():
    cfg = resolve_register_config(None, (), {"preset": "lung"})
    assert cfg["sigmas"] == LUNG_REGION["sigmas"] and cfg["regularizer"] == "optimized"
    assert cfg["region"] == {"inside": LUNG_REGION["inside"], "outside": LUNG_REGION["outside"]}
    predefined = resolve_register_config(
        None, (), {"preset": "lung", "regularizer": "predefined", "region_mask": "lung.nii.gz"}
    )
    assert (
        predefined["sigmas"] == LUNG_REGION["sigmas"] and predefined["spacing_mode"] == "physical"
    )


def test_preset_files_come_from_importlib_resources():
    """The loader reads the package's own data: the files the resources API lists are the
    presets, and their text is what the loader returns."""
    root = resources.files("rdmm_lightning.presets")
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
    assert names == sorted(f"{name}.yaml" for name in PRESETS)
    for name in PRESETS:
        assert preset_text(name) == root.joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError):
        preset_text("nope")


@pytest.mark.slow
def test_presets_ship_in_a_built_wheel(tmp_path):
    """A plain wheel holds the files, and the installed package finds them from any folder."""
    wheel = build_wheel(tmp_path)
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("rdmm_lightning/pre")}
    assert {f"rdmm_lightning/presets/{name}.yaml" for name in PRESETS} <= shipped
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import sys, rdmm_lightning; from rdmm_lightning.cli.main import main; "
        "assert rdmm_lightning.__file__.startswith(sys.argv[1]), rdmm_lightning.__file__; "
        "sys.exit(main(['register', '--preset', 'knee', '--print-config']))"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["preset"] == "knee"
    assert printed["similarity"] == load_preset("knee")["similarity"]


def test_api_takes_a_preset():
    """``rl.register(..., preset=...)``: the preset's values, under the keyword options."""
    g = torch.linspace(-1, 1, 24)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    source = (xx**2 + yy**2 < 0.4).float()
    target = ((xx - 0.1) ** 2 + yy**2 < 0.45).float()
    res = rl.register(
        source, target, model="svf", preset="synthetic", overrides=FAST, energy_weight=5.0
    )
    cfg = res.extras["config"]
    assert cfg["preset"] == "synthetic" and cfg["affine"] is False and cfg["normalize"] == "none"
    assert cfg["energy_weight"] == 5.0 and cfg["iterations"] == [2, 1]
    assert res.extras["metrics"]["config"]["preset"] == "synthetic"


def _knee_pair(folder: Path) -> dict[str, Path]:
    """Two synthetic knee phantoms of different subjects, 24x32x32 voxels of 4x2x2 mm."""
    folder.mkdir(parents=True)
    shape, spacing = (24, 32, 32), (4.0, 2.0, 2.0)
    affine = np.diag([*spacing, 1.0])
    paths = {}
    for name, seed in (("source", 1), ("target", 2)):
        image, label = generate_knee_phantom(seed, shape, spacing)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), paths[name])
        paths[f"{name}_label"] = folder / f"{name}_label.nii.gz"
        nib.save(nib.Nifti1Image(label, affine), paths[f"{name}_label"])
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_a_registration_with_each_preset_records_it(name, tmp_path):
    """A few iterations with each preset, on data of its kind: metrics.json names the preset
    and holds its values (the preset's own iterations replaced by key=value)."""
    if name == "knee":
        paths = _knee_pair(tmp_path / "pair")
    else:
        paths = write_pair(tmp_path / "pair", 2 if name == "synthetic" else 3)
    out = tmp_path / "out"
    metrics = register_files(
        paths["source"],
        paths["target"],
        out,
        source_label=paths["source_label"],
        target_label=paths["target_label"],
        overrides=[f"preset={name}", *FAST],
        progress=False,
    )
    recorded = json.loads((out / "metrics.json").read_text())
    assert recorded["config"]["preset"] == name == metrics["config"]["preset"]
    assert (
        recorded["config"]["sigmas"] == resolve_register_config(None, [f"preset={name}"])["sigmas"]
    )
    assert recorded["config"]["iterations"] == [2, 1] and recorded["complete"] is True
    assert 0 < recorded["dice"]["mean"] <= 1
