"""Generating the built-in synthetic datasets on first use (no download).

``synth2d`` (moving 2D shapes, :mod:`rdmm_lightning.synthetic.synth2d`) is written as three fixed
pair lists: ``train/pairs.csv``, ``val/pairs.csv``, ``test/pairs.csv`` (the test split defaults
to the paper's 40 pairs with seed 2018).

``synth3d`` (knee phantoms, :mod:`rdmm_lightning.synthetic.synth3d`) is written as a training pool
``train/pool.csv`` and a disjoint evaluation pool ``eval/pool.csv`` whose subjects form fixed
cross-subject pairs ``eval/pairs_val.csv`` and ``eval/pairs_test.csv`` (with labels and sides).

Each split is generated into a temporary folder and renamed, so an interrupted run leaves no
half-written split behind. Each split folder records the options it depends on in
``synthetic.json``: a later run with other options regenerates that split (with a logged
warning) instead of silently reusing it; a non-empty split folder without the record was not
written here and raises ValueError rather than being replaced.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .pool import read_pool_csv
from .sampling import PoolPairSampling, epoch_rng

__all__ = ["MANIFEST", "SYNTHETIC", "synthetic_available", "prepare_synthetic"]

log = logging.getLogger(__name__)

MANIFEST = "synthetic.json"  # in each split folder: the options it was generated with

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
            from rdmm_lightning.synthetic.synth2d import write_synth2d

            return write_synth2d
        from rdmm_lightning.synthetic.synth3d import write_synth3d_pool

        return write_synth3d_pool
    except Exception as err:  # the generators are optional at import time
        raise ValueError(
            f"synthetic={kind!r} needs rdmm_lightning.synthetic.{kind}, which cannot be "
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


def _normalized(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options with plain JSON types (so a recorded copy compares equal to a fresh one)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "shape":
            out[key] = [int(n) for n in value]
        elif key == "spacing":
            out[key] = [float(s) for s in value]
        else:
            out[key] = int(value)
    return out


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``option=old -> new`` for every recorded option (or the kind) that differs."""
    if old is None:
        return [f"unreadable {MANIFEST}"]
    if old.get("kind") != new["kind"]:
        return [f"synthetic={old.get('kind')!r} -> {new['kind']!r}"]
    before, after = old.get("options") or {}, new["options"]
    return [
        f"synthetic_options.{key}={before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ] or ["incomplete split"]


def _install(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` to ``final``, replacing what is there (ours: checked before)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    stale = final.parent / f".stale-{final.name}-{os.getpid()}"
    shutil.rmtree(stale, ignore_errors=True)
    os.replace(final, stale)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(stale, final)
        raise
    shutil.rmtree(stale, ignore_errors=True)


def _split(
    data_dir: Path,
    name: str,
    marker: str,
    record: dict[str, Any],
    write: Callable[[Path], None],
) -> None:
    """Generate split ``name`` unless ``data_dir/name`` holds it generated with ``record``.

    ``record`` (``kind`` and the options this split depends on) is written to ``MANIFEST`` in the
    split folder. A folder with a different record is regenerated (logged); a non-empty folder
    without one is not ours to replace: ValueError.
    """
    final = data_dir / name
    manifest = final / MANIFEST
    if manifest.is_file():
        old = _read_manifest(manifest)
        if old == record and (final / marker).is_file():
            return
        log.warning(
            "%s was generated with other options (%s): regenerating it",
            final,
            ", ".join(_differences(old, record)),
        )
    elif (final.is_dir() and any(final.iterdir())) or (final.exists() and not final.is_dir()):
        raise ValueError(
            f"{final} exists but was not generated by prepare_synthetic (no {MANIFEST}), so it "
            f"cannot be checked against synthetic_options: move or delete it, or choose another "
            f"data_dir"
        )
    tmp = data_dir / f".partial-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        (tmp / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
        _install(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_SPLIT_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "synth2d": {
        "train": ("num_train", "train_seed", "size"),
        "val": ("num_val", "val_seed", "size"),
        "test": ("num_test", "test_seed", "size"),
    },
    "synth3d": {
        "train": ("train_subjects", "seed", "shape", "spacing", "visits"),
        "eval": ("eval_subjects", "num_val", "num_test", "seed", "shape", "spacing", "visits"),
    },
}


def prepare_synthetic(kind: str, data_dir: str | Path, options: Mapping[str, Any] | None) -> None:
    """Write the splits of ``kind`` into ``data_dir`` unless they exist with these options.

    A split generated here with other options is regenerated (a logged warning); a non-empty
    split folder that was not generated here raises ValueError (it is never deleted).
    """
    opts = _normalized(_options(kind, options))
    write = _generator(kind)
    root = Path(os.path.expanduser(str(data_dir)))
    root.mkdir(parents=True, exist_ok=True)

    def record(split: str) -> dict[str, Any]:
        keys = _SPLIT_OPTIONS[kind][split]
        return {"format": 1, "kind": kind, "options": {k: opts[k] for k in keys}}

    if kind == "synth2d":
        for split in ("train", "val", "test"):
            num, seed = opts[f"num_{split}"], opts[f"{split}_seed"]
            _split(
                root,
                split,
                "pairs.csv",
                record(split),
                lambda out, n=num, s=seed: write(out, num_pairs=n, seed=s, size=opts["size"]),
            )
        return
    common = {
        "shape": tuple(opts["shape"]),
        "spacing": tuple(opts["spacing"]),
        "visits": opts["visits"],
    }
    seed = opts["seed"]
    _split(
        root,
        "train",
        "pool.csv",
        record("train"),
        lambda out: write(out, subjects=opts["train_subjects"], seed=seed, **common),
    )

    def write_eval(out: Path) -> None:
        pool_csv = write(out, subjects=opts["eval_subjects"], seed=seed + 1, **common)
        _write_eval_pairs(pool_csv, opts["num_val"], opts["num_test"], seed)

    _split(root, "eval", "pairs_test.csv", record("eval"), write_eval)


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
