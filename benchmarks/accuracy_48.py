"""Ablation of lddmm/rdmm-opt settings on the synthetic 48^3 shapes pairs (accuracy vs time).

    python benchmarks/accuracy_48.py [--pairs 3] [--models lddmm,rdmm] [--threads 1]
        [--set lowres_factor=1.0 ...] [--vary "iterations=(60,40,20);(60,40,40)" ...]

Pairs are those of ``benchmarks/speed_vs_reference.py`` (``shapes_pair_3d(1000 + i)``): a large
ellipsoid (label 1) holding two inner objects (labels 2, 3; radii 8-12% of the size, overlapping,
label 3 drawn over label 2) and three small outer objects in three corners (labels 4-6, radii
6-8%, i.e. 3-4 voxels). ``--set key=value`` (repeatable; ``model.key=value`` for one model)
overrides library defaults of ``optimize_deformable`` for every row (shorthands: ``window=k``
the LNCC window, ``num_steps``/``method``/``checkpoint`` the solver); each
``--vary key=v1;v2;...`` gives one row per value (several ``--vary`` give their product). Values
are Python literals. Prints per setting and model the mean Dice over the 6 objects per pair and
over pairs, the mean Dice of the large / inner / small objects over pairs, negative-Jacobian
voxels of ``phi^{-1}`` (max over pairs), the L-BFGS iterations reached per scale and objective
evaluations (means over pairs), wall seconds and CPU seconds (``time.process_time``, steadier
than wall time on a shared machine) per pair.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rdmm_lightning.metrics import dice_per_label, fold_statistics, jacobian_determinant
from rdmm_lightning.ops.warp import warp_labels
from rdmm_lightning.optimize import optimize_deformable
from rdmm_lightning.options import Model, values
from rdmm_lightning.shooting import SolverOptions

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.speed_vs_reference import shapes_pair_3d  # noqa: E402

MODELS = values(Model.deformable())
GROUPS = {"large": (1,), "inner": (2, 3), "small": (4, 5, 6)}
"""Object labels of :func:`shapes_pair_3d` by size."""


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _parse_set(item: str) -> tuple[str | None, str, Any]:
    """``[model.]key=value`` -> ``(model or None, key, value)``."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set/--vary expects [model.]key=value; got {item!r}")
    model, dot, name = key.partition(".")
    if not dot:
        return None, key, _literal(value)
    if model not in MODELS:
        raise SystemExit(f"--set/--vary model must be one of {MODELS}; got {item!r}")
    return model, name, _literal(value)


def _settings(sets: list[str], varies: list[str]) -> list[tuple[str, list[tuple]]]:
    """Rows: ``(label, [(model, key, value), ...])`` of the fixed ``--set`` items plus one
    combination of the ``--vary`` values."""
    fixed = [_parse_set(s) for s in sets]
    axes = []
    for item in varies:
        key, sep, values = item.partition("=")
        if not sep:
            raise SystemExit(f"--vary expects [model.]key=v1;v2;...; got {item!r}")
        axes.append([f"{key}={v.strip()}" for v in values.split(";") if v.strip()])
    rows = []
    for combo in itertools.product(*axes) if axes else [()]:
        label = " ".join(combo) if combo else "defaults"
        rows.append((label, fixed + [_parse_set(c) for c in combo]))
    return rows


SOLVER_KEYS = ("method", "num_steps", "checkpoint")
"""Shorthand keys for fields of ``SolverOptions`` (passed as ``solver=``)."""


def _kwargs(items: list[tuple], model: str) -> dict[str, Any]:
    """Keyword arguments of ``optimize_deformable``; ``window=k`` is the LNCC window and
    :data:`SOLVER_KEYS` build the solver."""
    out = {key: value for m, key, value in items if m in (None, model)}
    solver = {k: out.pop(k) for k in SOLVER_KEYS if k in out}
    if solver:
        out["solver"] = SolverOptions(**solver)
    if "window" in out:
        out["similarity_kwargs"] = {"window": out.pop("window")}
    return out


def _register(model: str, pair, kwargs: dict[str, Any]) -> dict[str, Any]:
    src, tgt, src_lab, tgt_lab = (torch.from_numpy(a)[None, None] for a in pair)
    cpu = time.process_time()
    res = optimize_deformable(src, tgt, model, **kwargs)
    cpu = time.process_time() - cpu
    warped = warp_labels(src_lab, res.phi_inv, res.spacing)
    per = {k: float(v[0]) for k, v in dice_per_label(warped, tgt_lab, range(1, 7)).items()}
    stats = fold_statistics(jacobian_determinant(res.phi_inv, res.spacing))
    iters: dict[float, int] = {}
    for rec in res.history:
        iters[rec["scale"]] = max(iters.get(rec["scale"], 0), int(rec["iteration"]))
    evals = sum(max(r["evaluations"] for r in res.history if r["scale"] == s) for s in iters)
    return {
        "dice": statistics.mean(per.values()),
        "groups": {g: statistics.mean(per[k] for k in ks) for g, ks in GROUPS.items()},
        "per": per,
        "neg": float(stats["negative_jacobian_voxels"][0]),
        "iters": [iters[s] for s in sorted(iters)],
        "evals": evals,
        "time": float(res.time_s),
        "cpu": cpu,
        "stopped": res.stopped,
    }


def _row(label: str, model: str, rs: list[dict[str, Any]]) -> str:
    pairs = " ".join(f"{r['dice']:.3f}" for r in rs)
    groups = " | ".join(f"{statistics.mean(r['groups'][g] for r in rs):.3f}" for g in GROUPS)
    iters = "/".join(f"{statistics.mean(r['iters'][k] for r in rs):.0f}" for k in range(3))
    return (
        f"| {label} | {model} | {pairs} | {statistics.mean(r['dice'] for r in rs):.4f} | "
        f"{groups} | {max(r['neg'] for r in rs):.0f} | {iters} | "
        f"{statistics.mean(r['evals'] for r in rs):.0f} | "
        f"{statistics.mean(r['time'] for r in rs):.1f} | "
        f"{statistics.mean(r['cpu'] for r in rs):.1f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--models", default="lddmm,rdmm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="[model.]key=value")
    parser.add_argument("--vary", action="append", default=[], help="[model.]key=v1;v2;...")
    parser.add_argument("--verbose", action="store_true", help="per-pair, per-label lines")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        raise SystemExit(f"--models must be drawn from {MODELS}; got {args.models!r}")
    rows = _settings(args.set, args.vary)
    pairs = [shapes_pair_3d(1000 + i) for i in range(args.pairs)]
    print(f"48^3 shapes pairs 1000..{999 + args.pairs}, {args.threads} thread(s)")
    print(f"command: python benchmarks/accuracy_48.py {shlex.join(argv or sys.argv[1:])}")
    header = "| setting | model | Dice per pair | mean Dice | large | inner | small | "
    header += "neg det J (max) | iterations/scale | evaluations | s/pair | CPU s/pair |"
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    start = time.perf_counter()
    for label, items in rows:
        for model in models:
            rs = []
            for i, pair in enumerate(pairs):
                r = _register(model, pair, _kwargs(items, model))
                rs.append(r)
                if args.verbose or r["stopped"]:
                    per = " ".join(f"{k}:{v:.3f}" for k, v in r["per"].items())
                    print(
                        f"  {label} {model} pair {i}: Dice {r['dice']:.4f} ({per}) neg "
                        f"{r['neg']:.0f} iters {r['iters']} {r['time']:.1f}s cpu {r['cpu']:.1f}s "
                        f"{r['stopped'] or ''}",
                        file=sys.stderr,
                        flush=True,
                    )
            lines.append(_row(label, model, rs))
            print(lines[-1], flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
