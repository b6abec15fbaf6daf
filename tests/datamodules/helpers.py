"""Tiny NIfTI pools and pair lists written with nibabel (no dependency on the generators)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def write_volume(
    path: Path,
    shape: Sequence[int] = (16, 16, 16),
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    label: bool = False,
    flip_x: bool = False,
) -> Path:
    """A random blob image (or its label map) with a non-identity affine."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    if label:
        data = (radius < 0.5).astype(np.uint8) + (radius < 0.25).astype(np.uint8)
    else:
        data = (200.0 * (radius < 0.6) + 20.0 * rng.random(tuple(shape))).astype(np.float32)
    affine = np.diag([*spacing, 1.0][:4] if len(spacing) == 3 else [*spacing, 1.0, 1.0])
    affine[:3, 3] = (-5.0, 3.0, 1.0)
    if flip_x:  # stored left-right reversed: canonical reorientation must undo it
        affine[0, 0] *= -1
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def make_pool(
    root: Path,
    subjects: int = 4,
    per_subject: int = 2,
    shape: Sequence[int] = (16, 16, 16),
    labels: bool = True,
) -> Path:
    """``pool.csv`` with columns path,label,subject,side,visit (relative paths)."""
    rows = []
    for s in range(subjects):
        for v in range(per_subject):
            side = "left" if v % 2 == 0 else "right"
            name = f"sub{s:02d}_v{v}"
            write_volume(
                root / "img" / f"{name}.nii.gz", shape, seed=10 * s + v, flip_x=(s + v) % 3 == 0
            )
            label = ""
            if labels:
                write_volume(
                    root / "lab" / f"{name}.nii.gz", shape, label=True, flip_x=(s + v) % 3 == 0
                )
                label = f"lab/{name}.nii.gz"
            rows.append([f"img/{name}.nii.gz", label, f"S{s}", side, str(v)])
    return write_csv(root / "pool.csv", ["path", "label", "subject", "side", "visit"], rows)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_pairs(root: Path, pairs: Sequence[tuple[str, str]], labels: bool = True) -> Path:
    """``pairs.csv`` over volume names of :func:`make_pool` (``"sub00_v0"``)."""
    header = ["source", "target"] + (["source_label", "target_label"] if labels else [])
    rows = []
    for s, t in pairs:
        row = [f"img/{s}.nii.gz", f"img/{t}.nii.gz"]
        rows.append(row + ([f"lab/{s}.nii.gz", f"lab/{t}.nii.gz"] if labels else []))
    return write_csv(root / "pairs.csv", header, rows)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file (a corrupt .nii.gz)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
