"""Accuracy benchmark of the pairwise optimisers on IXI brains (3D, 148 labels).

    python benchmarks/ixi_opt.py [--pairs 10] [--skip 0] [--threads 2] [--data ../shared/data/ixi]
        [--models svf,lddmm,rdmm] [--set lddmm.iterations=(20,10,5) ...] [--no-ants]

Pairs come from ``pairs_eval.csv`` of the IXI folder (see its README: 120x120x90 voxels at 2 mm,
native scanner space, raw mean Dice ~0.22). Images are registered on their own voxel grid (both
images of a pair share it) with physical domain spacing (2 mm isotropic), intensities mapped to
[0, 1] by the 0.5 and 99.5 percentiles. Each pair runs affine-opt once, then every deformable
model from the affine map. Prints a markdown table of the mean Dice over labels (source labels
warped with nearest neighbour, background excluded) before, after affine-opt and after each
model (dataset settings :data:`IXI_DEFORMABLE`), negative-Jacobian voxels of ``phi^{-1}``, and
time per pair. With ``antspyx`` importable (optional, never required) ANTs SyN rows are added.
Skips with a message when the data folder is missing.
"""

from __future__ import annotations

import argparse
import ast
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmm_lightning.metrics import fold_statistics, jacobian_determinant, mean_dice
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.warp import warp_labels
from rdmm_lightning.optimize import optimize_affine, optimize_deformable
from rdmm_lightning.options import Model, SpacingMode, values

DEFORMABLE = values(Model.deformable())
IXI_DEFORMABLE: dict[str, Any] = {
    "sigmas": (0.015, 0.03, 0.06, 0.12),
    "similarity_kwargs": {"window": 5},
    "iterations": (60, 40, 20),
}
"""Dataset settings of the deformable rows (``--set`` overrides them; ``--preset brain`` of
``rdmm register`` is the same): the library's kernel stack and iterations with a 5-tap LNCC
window. Until 2026-12-02 the kernels were wider (0.05, 0.1, 0.15, 0.2) with (60, 40, 10)
iterations; the library stack gained 0.035-0.047 Dice on pairs 0-2 (lddmm 0.5635 -> 0.5982,
0.6228 -> 0.6571; rdmm 0.5609 -> 0.5904, 0.6130 -> 0.6596), no folds."""
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi"


def _load(path: Path, label: bool = False) -> np.ndarray:
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj)
    return data.astype(np.int64) if label else data.astype(np.float32)


def _normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        model, _, name = key.partition(".")
        if not name or model not in values(Model):
            names = "/".join(values(Model))
            raise SystemExit(f"--set expects model.key=value (model {names}): {item}")
        try:
            out.setdefault(model, {})[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out.setdefault(model, {})[name] = value
    return out


def _metrics(phi_inv, spacing, src_lab, tgt_lab, seconds: float) -> dict[str, float]:
    warped = warp_labels(src_lab, phi_inv, spacing)
    stats = fold_statistics(jacobian_determinant(phi_inv, spacing))
    return {
        "dice": float(mean_dice(warped, tgt_lab)[0]),
        "neg": float(stats["negative_jacobian_voxels"][0]),
        "time": seconds,
    }


def _ants_syn(src: np.ndarray, tgt: np.ndarray, src_lab: np.ndarray, tgt_lab: np.ndarray):
    """ANTs SyN (default settings) on the same voxel grids; None when antspyx is missing."""
    try:
        import ants
    except ImportError:
        return None
    start = time.perf_counter()
    fixed = ants.from_numpy(tgt, spacing=(2.0, 2.0, 2.0))
    moving = ants.from_numpy(src, spacing=(2.0, 2.0, 2.0))
    reg = ants.registration(fixed, moving, type_of_transform="SyN")
    lab = ants.from_numpy(src_lab.astype(np.float32), spacing=(2.0, 2.0, 2.0))
    warped = ants.apply_transforms(fixed, lab, reg["fwdtransforms"], interpolator="genericLabel")
    seconds = time.perf_counter() - start
    w = torch.from_numpy(warped.numpy().round().astype(np.int64))[None, None]
    t = torch.from_numpy(tgt_lab)[None, None]
    return {"dice": float(mean_dice(w, t)[0]), "neg": float("nan"), "time": seconds}


def _row(name: str, rows: list[dict[str, float]]) -> str:
    dice = [r["dice"] for r in rows]
    sd = statistics.pstdev(dice) if len(dice) > 1 else 0.0
    neg = [r["neg"] for r in rows]
    neg_txt = "-" if any(n != n for n in neg) else f"{statistics.mean(neg):.1f}"
    return (
        f"| {name} | {statistics.mean(dice):.4f} ± {sd:.4f} | {neg_txt} | "
        f"{statistics.mean(r['time'] for r in rows):.1f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--skip", type=int, default=0, help="start after this many pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(DEFORMABLE))
    parser.add_argument("--spacing", choices=values(SpacingMode), default="physical")
    parser.add_argument("--set", action="append", default=[], help="model.key=value override")
    parser.add_argument("--no-ants", action="store_true", help="skip ANTs SyN even if installed")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    csv_path = args.data / "pairs_eval.csv"
    if not csv_path.is_file():
        print(f"IXI data not found ({csv_path}); skipping the IXI benchmark.")
        return
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(DEFORMABLE):
        raise SystemExit(f"--models must be among {DEFORMABLE}")
    overrides = _parse_sets(args.set)
    with open(csv_path, newline="") as f:
        pairs = list(csv.DictReader(f))[args.skip : args.skip + args.pairs]
    rows: dict[str, list[dict[str, float]]] = {"before": [], "affine": []}
    rows.update({f"affine + {m}": [] for m in models})
    ants_rows: list[dict[str, float]] = []
    start = time.perf_counter()
    for k, pair in enumerate(pairs, start=args.skip):
        raw = {key: _load(args.data / pair[key], "label" in key) for key in pair}
        src_np, tgt_np = _normalise(raw["source"]), _normalise(raw["target"])
        src = torch.from_numpy(src_np)[None, None]
        tgt = torch.from_numpy(tgt_np)[None, None]
        src_lab = torch.from_numpy(raw["source_label"])[None, None]
        tgt_lab = torch.from_numpy(raw["target_label"])[None, None]
        shape = tuple(src.shape[2:])
        sp = domain_spacing(shape, args.spacing, (2.0, 2.0, 2.0))
        rows["before"].append(
            {"dice": float(mean_dice(src_lab, tgt_lab)[0]), "neg": 0.0, "time": 0.0}
        )
        aff = optimize_affine(
            src, tgt, spacing=sp, progress=args.progress, **overrides.get("affine", {})
        )
        rows["affine"].append(_metrics(aff.phi_inv, sp, src_lab, tgt_lab, aff.time_s))
        line = f"pair {k}: raw {rows['before'][-1]['dice']:.4f}"
        line += f" affine {rows['affine'][-1]['dice']:.4f}"
        for model in models:
            res = optimize_deformable(
                src,
                tgt,
                model,
                spacing=sp,
                initial_map=aff.phi_inv,
                initial_forward=aff.phi,
                progress=args.progress,
                **{**IXI_DEFORMABLE, **overrides.get(model, {})},
            )
            met = _metrics(res.phi_inv, sp, src_lab, tgt_lab, aff.time_s + res.time_s)
            rows[f"affine + {model}"].append(met)
            note = f", {res.stopped}" if res.stopped else ""
            line += f" {model} {met['dice']:.4f} ({res.time_s:.0f}s{note})"
        if not args.no_ants:
            syn = _ants_syn(src_np, tgt_np, raw["source_label"], raw["target_label"])
            if syn is not None:
                ants_rows.append(syn)
                line += f" SyN {syn['dice']:.4f}"
        print(line, file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    print(
        f"\nIXI {len(pairs)} pairs, {args.threads} thread(s), {args.spacing} spacing, "
        f"total {total:.0f} s"
    )
    print(f"deformable settings: {IXI_DEFORMABLE}")
    if overrides:
        print(f"overrides: {overrides}")
    print("\n| method | mean Dice ± sd | neg. det J voxels | s/pair (incl. affine) |")
    print("|---|---|---|---|")
    for name, rs in rows.items():
        print(_row(name, rs))
    if ants_rows:
        print(_row("ANTs SyN (antspyx defaults)", ants_rows))
    elif not args.no_ants:
        print("(antspyx not installed: no ANTs SyN rows)")


if __name__ == "__main__":
    main()
