"""Generating the built-in synthetic datasets on first use (no download).

``synth2d`` (moving 2D shapes, :mod:`rdmm_lightning.data.synth2d`) is written as three fixed
pair lists: ``train/pairs.csv``, ``val/pairs.csv``, ``test/pairs.csv`` (the test split defaults
to the paper's 40 pairs with seed 2018).

``synth3d`` (knee phantoms, :mod:`rdmm_lightning.data.synth3d`) is written as a training pool
``train/pool.csv`` and a disjoint evaluation pool ``eval/pool.csv`` whose subjects form fixed
cross-subject pairs ``eval/pairs_val.csv`` and ``eval/pairs_test.csv`` (with labels and sides).

Each split is generated into a temporary folder and renamed, so an interrupted run leaves no
half-written split behind.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .pool import read_pool_csv
from .sampling import PoolPairSampling, epoch_rng

__all__ = ["SYNTHETIC", "synthetic_available", "prepare_synthetic"]

SYNTH2D_DEFAULTS: dict[str, Any] = {
    "num_train": 100,
    "num_val": 10,
    "num_test": 40,
    "size": 200,
    "train_seed": 1,
    "val_seed": 2,
    "test_seed": 2018,
}
SYNTH3D_DEFAULTS: dict[str, Any] = {
    "train_subjects": 40,
    "eval_subjects": 10,
    "num_val": 10,
    "num_test": 20,
    "shape": (48, 64, 64),
    "spacing": (2.0, 1.0, 1.0),
    "visits": 1,
    "seed": 0,
}
SYNTHETIC: dict[str, dict[str, Any]] = {"synth2d": SYNTH2D_DEFAULTS, "synth3d": SYNTH3D_DEFAULTS}


def _generator(kind: str) -> Callable[..., Path]:
    try:
        if kind == "synth2d":
            from rdmm_lightning.data.synth2d import write_synth2d

            return write_synth2d
        from rdmm_lightning.data.synth3d import write_synth3d_pool

        return write_synth3d_pool
    except Exception as err:  # the generators are optional at import time
        raise ValueError(
            f"synthetic={kind!r} needs rdmm_lightning.data.{kind}, which cannot be "
            f"imported: {type(err).__name__}: {err}"
        ) from err


def synthetic_available(kind: str) -> bool:
    """Whether the generator of ``kind`` can be imported."""
    try:
        _generator(kind)
    except ValueError:
        return False
    return True


def _options(kind: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    if kind not in SYNTHETIC:
        raise ValueError(f"unknown synthetic dataset {kind!r}; choose from {sorted(SYNTHETIC)}")
    merged = dict(SYNTHETIC[kind])
    unknown = sorted(set(options or {}) - set(merged))
    if unknown:
        raise ValueError(f"unknown synthetic_options {unknown} for {kind}; known: {sorted(merged)}")
    merged.update(options or {})
    return merged


def _split(data_dir: Path, name: str, marker: str, write: Callable[[Path], None]) -> None:
    final = data_dir / name
    if (final / marker).is_file():
        return
    if final.exists():
        raise ValueError(f"{final} exists but holds no {marker}: delete it to regenerate")
    tmp = data_dir / f".partial-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_synthetic(kind: str, data_dir: str | Path, options: Mapping[str, Any] | None) -> None:
    """Write the splits of ``kind`` into ``data_dir`` unless they already exist."""
    opts = _options(kind, options)
    write = _generator(kind)
    root = Path(os.path.expanduser(str(data_dir)))
    root.mkdir(parents=True, exist_ok=True)
    if kind == "synth2d":
        for split in ("train", "val", "test"):
            num, seed = int(opts[f"num_{split}"]), int(opts[f"{split}_seed"])
            _split(
                root,
                split,
                "pairs.csv",
                lambda out, n=num, s=seed: write(out, num_pairs=n, seed=s, size=opts["size"]),
            )
        return
    common = {
        "shape": tuple(opts["shape"]),
        "spacing": tuple(opts["spacing"]),
        "visits": int(opts["visits"]),
    }
    seed = int(opts["seed"])
    _split(
        root,
        "train",
        "pool.csv",
        lambda out: write(out, subjects=int(opts["train_subjects"]), seed=seed, **common),
    )

    def write_eval(out: Path) -> None:
        pool_csv = write(out, subjects=int(opts["eval_subjects"]), seed=seed + 1, **common)
        _write_eval_pairs(pool_csv, int(opts["num_val"]), int(opts["num_test"]), seed)

    _split(root, "eval", "pairs_test.csv", write_eval)


def _write_eval_pairs(pool_csv: Path, num_val: int, num_test: int, seed: int) -> None:
    """Fixed cross-subject pairs of a labeled synth3d pool (paths relative to its folder)."""
    table = read_pool_csv(pool_csv, label_column="label", extra_columns=("side",))
    base = pool_csv.parent
    pairs = PoolPairSampling(table.subjects).draw(epoch_rng(seed, 0, 7), num_val + num_test)
    for name, rows in (("pairs_val.csv", pairs[:num_val]), ("pairs_test.csv", pairs[num_val:])):
        with open(base / name, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(
                ["source", "target", "source_label", "target_label", "source_side", "target_side"]
            )
            for s, t in np.asarray(rows):
                out.writerow(
                    [
                        os.path.relpath(table.path(s), base),
                        os.path.relpath(table.path(t), base),
                        os.path.relpath(table.label(s), base),
                        os.path.relpath(table.label(t), base),
                        table.group_value("side", s),
                        table.group_value("side", t),
                    ]
                )
