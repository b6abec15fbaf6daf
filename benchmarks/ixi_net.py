"""Learned registration on IXI brains (3D, 148 labels): affine-net, then RDMM-net, on a CPU.

    python benchmarks/ixi_net.py [--affine-minutes 15] [--rdmm-minutes 30] [--threads 2]
        [--root checkpoints/ixi_net_benchmark] [--affine-ckpt CKPT --rdmm-ckpt CKPT]
        [--refine-steps 50] [--pairs 10] [--data ../shared/data/ixi]

1. trains ``experiment=ixi_small_affine_net`` (volumes reoriented to RAS+ and resized to
   64x80x80, 2.8x3x3 mm) for ``--affine-minutes`` of wall time (``trainer.max_time``);
2. trains ``experiment=ixi_small_rdmm_net`` on top of the frozen affine net (its best
   checkpoint) for ``--rdmm-minutes``;
3. evaluates the first ``--pairs`` pairs of ``pairs_eval.csv`` (subjects never seen in
   training) with ``rdmm evaluate``'s code path for affine-net, rdmm-net, and rdmm-net followed
   by ``--refine-steps`` steps of instance optimisation. Dice is the mean over the labels present
   in the target, with the source label map warped onto the target's original 2 mm label grid;
4. registers the same pairs with affine-opt + rdmm-opt through the same pipeline (``rdmm
   evaluate --model rdmm``) on a working grid of the same size (64x80x80 over the target's field
   of view) with the IXI settings of ``benchmarks/ixi_opt.py``.

Pass ``--affine-ckpt``/``--rdmm-ckpt`` to skip training, ``--stages`` to run only some of
``nets,opt``. Prints a markdown table. Skips with a message when the data folder is missing.

Evaluation only, of trained or shipped deformable nets (no training), e.g. the brain models
trained on the affinely pre-aligned pool (``rdmm data align``; affine-opt on each pair first)::

    python benchmarks/ixi_net.py --stages checkpoints --affine opt --refine-steps 20 \
        --checkpoint rdmm-net=brain-t1-rdmm-net --checkpoint lddmm-net=RUN/best.ckpt

evaluates every ``LABEL=CKPT`` (a path or a shipped model's name) with K as trained (or
``--num-steps K``), without and with ``--refine-steps`` (``--refine-steps 0``: without only).
``--interleave`` (stages checkpoints and opt) runs every row on pair 1, then every row on pair 2,
and so on, in one process, and prints each row's time as a ratio of the last row's: the
machine's cores are shared, and their speed drifts by 10% over minutes, more than the
differences a ratio between rows is meant to show.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rdmm_lightning.io.pairs import PAIR_COLUMNS
from rdmm_lightning.options import AffineStage, values
from rdmm_lightning.pipeline.evaluate import (
    SUMMARY_METRICS,
    evaluate_pairs,
    mean_std,
    read_pairs_csv,
)

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ixi_opt import IXI_DEFORMABLE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ixi"


def _max_time(minutes: float) -> str:
    total = int(round(minutes * 60))
    return f"00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _train(experiment: str, minutes: float, root: Path, data: Path, *extra: str) -> Path:
    """Run ``train.py`` for ``minutes``; returns the run's best checkpoint."""
    run_dir = root / experiment
    argv = [
        sys.executable,
        str(ROOT / "train.py"),
        f"experiment={experiment}",
        f"data.data_dir={data}",
        f"trainer.max_time={_max_time(minutes)}",
        f"paths.run_dir={run_dir}",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "print_infer_command=false",
        f"+data.cache_dir={root / 'cache'}",  # preprocessed volumes, shared by both runs
        *extra,
    ]
    print("$ " + " ".join(argv[1:]), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT)
    print(f"{experiment}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return run_dir / "best.ckpt"


def _row(name: str, summary: dict, training: str) -> str:
    mean, std = summary["mean"], summary["std"]
    initial = mean.get("dice_initial_mean")
    return (
        f"| {name} | {mean['dice_mean']:.4f} ± {std['dice_mean']:.4f} | "
        f"{'-' if initial is None else f'{initial:.4f}'} | "
        f"{mean['negative_jacobian_voxels']:.1f} | {mean['time_s']:.2f} | {training} |"
    )


def _steps(ckpt: Path) -> str:
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)
    return f"epoch {meta.get('epoch')}, {meta.get('global_step')} steps"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--root", type=Path, default=ROOT / "checkpoints" / "ixi_net_benchmark")
    parser.add_argument("--affine-minutes", type=float, default=15.0)
    parser.add_argument("--rdmm-minutes", type=float, default=30.0)
    parser.add_argument("--affine-ckpt", type=Path, help="skip affine training, use this")
    parser.add_argument("--rdmm-ckpt", type=Path, help="skip rdmm training, use this")
    parser.add_argument("--refine-steps", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", default="nets,opt", help="comma list of nets, opt, checkpoints")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="LABEL=CKPT",
        help="stage checkpoints: a net to evaluate (path or shipped model name); repeatable",
    )
    parser.add_argument(
        "--affine",
        choices=values(AffineStage),
        default=None,
        help="stage checkpoints: affine stage before the nets (default: as trained)",
    )
    parser.add_argument(
        "--num-steps",
        type=int,
        default=None,
        metavar="K",
        help="stage checkpoints: network iterations K (default: as trained)",
    )
    parser.add_argument(
        "--compile-shooting",
        action="store_true",
        help="stages checkpoints and opt: shoot through torch.compile (rdmm infer "
        "--compile-shooting, solver.compile=true; the first pair of each row compiles)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="stages checkpoints and opt: every row on pair 1, then on pair 2, ... in one "
        "process (time ratios measured in one run; shared cores change speed over minutes)",
    )
    args = parser.parse_args(argv)
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    csv_path = args.data / "pairs_eval.csv"
    if not csv_path.is_file():
        print(f"IXI data not found ({csv_path}); skipping the IXI network benchmark.")
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    pairs = read_pairs_csv(csv_path)[: args.pairs]
    subset = args.root / "pairs_eval_subset.csv"
    subset.parent.mkdir(parents=True, exist_ok=True)
    lines = [PAIR_HEADER] + [_pair_line(p) for p in pairs]
    subset.write_text("\n".join(lines) + "\n")
    table = []
    if "nets" in stages:
        table += _nets(args, subset)
    runs = _checkpoint_runs(args) if "checkpoints" in stages else []
    runs += [_opt_run(args)] if "opt" in stages else []
    if args.interleave:
        table += _interleaved_rows(args, pairs, runs)
    else:
        table += _evaluate_rows(args, subset, runs)
    print(
        f"\nIXI, {len(pairs)} evaluation pairs, {args.threads} threads, "
        f"64x80x80 working grid, Dice at the 2 mm label grid"
    )
    print("\n| method | mean Dice ± sd | Dice before | neg. det J voxels | s/pair | training |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table))


def _compiled(args: argparse.Namespace, text: str = "_compiled") -> str:
    """``text`` with ``--compile-shooting``, else nothing."""
    return text if args.compile_shooting else ""


@dataclass(frozen=True)
class Run:
    """One table row: its ``name``, output folder name ``folder``, the keyword arguments of
    :func:`evaluate_pairs` and the ``training`` column."""

    name: str
    folder: str
    kwargs: dict[str, Any]
    training: str


def _checkpoint_runs(args: argparse.Namespace) -> list[Run]:
    """Rows of the ``--checkpoint LABEL=CKPT`` nets, without and with ``--refine-steps``."""
    from rdmm_lightning.pretrained.registry import resolve_checkpoint

    runs = []
    for spec in args.checkpoint:
        label, sep, ckpt = spec.partition("=")
        if not sep or not label or not ckpt:
            raise SystemExit(f"--checkpoint must be LABEL=CKPT; got {spec!r}")
        path = Path(resolve_checkpoint(ckpt))
        affine = args.affine or "as trained"
        for refine in sorted({0, args.refine_steps}):
            k = "" if args.num_steps is None else f" (K={args.num_steps})"
            name = f"affine {affine} + {label}{k}" + (f" + {refine} refine steps" if refine else "")
            name += _compiled(args, " (compiled shooting)")
            k_dir = "" if args.num_steps is None else f"_k{args.num_steps}"
            k_dir += _compiled(args)
            folder = f"{label}_{args.affine or 'default'}{k_dir}_refine{refine}"
            kwargs = dict(
                checkpoint=path, refine_steps=refine, affine=args.affine, threads=args.threads,
                num_steps=args.num_steps, compile_shooting=args.compile_shooting or None,
            )  # fmt: skip
            runs.append(Run(name, folder, kwargs, _steps(path)))
    return runs


def _opt_run(args: argparse.Namespace) -> Run:
    """The affine-opt + rdmm-opt row (IXI settings of ``benchmarks/ixi_opt.py``)."""
    config = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in IXI_DEFORMABLE.items()},
        "working_shape": [64, 80, 80],
        "spacing_mode": "physical",
    }
    if args.compile_shooting:
        config["solver"] = {"compile": True}
    name = "affine-opt + rdmm-opt (64x80x80)" + _compiled(args, " (compiled shooting)")
    folder = f"affine_opt_rdmm_opt{_compiled(args)}"
    kwargs = {"model": "rdmm", "config": config, "threads": args.threads}
    return Run(name, folder, kwargs, "-")


def _evaluate_rows(args: argparse.Namespace, subset: Path, runs: list[Run]) -> list[str]:
    """Each run over all pairs, one run after the other."""
    table = []
    for run in runs:
        print(f"evaluating {run.name}", file=sys.stderr, flush=True)
        result = evaluate_pairs(subset, args.root / "eval" / run.folder, **run.kwargs)
        table.append(_row(run.name, result.summary, run.training))
    return table


def _interleaved_rows(args: argparse.Namespace, pairs: list, runs: list[Run]) -> list[str]:
    """``--interleave``: every run on pair 1, then every run on pair 2, ..., in this process, so
    that a change in the machine's speed during the benchmark (shared cores) hits every row
    alike and the rows' time ratios are measured in one run. Prints the ratio of each row's
    mean time to the last row's (rdmm-opt when ``opt`` is a stage)."""
    rows: dict[str, list[dict[str, Any]]] = {run.name: [] for run in runs}
    for i, pair in enumerate(pairs, start=1):
        one = args.root / "pairs" / f"pair_{i:03d}.csv"
        one.parent.mkdir(parents=True, exist_ok=True)
        one.write_text(f"{PAIR_HEADER}\n{_pair_line(pair)}\n")
        for run in runs:
            out = args.root / "eval" / run.folder / f"pair_{i:03d}"
            row = evaluate_pairs(one, out, progress=False, **run.kwargs).rows[0]
            rows[run.name].append(row)
            print(
                f"pair {i}/{len(pairs)} {run.name}: Dice {row['dice_mean']:.4f}, "
                f"{row['time_s']:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    table, times = [], {}
    for run in runs:
        stats = {key: mean_std(r[key] for r in rows[run.name]) for key in SUMMARY_METRICS}
        summary = {"mean": {k: v[0] for k, v in stats.items()}}
        summary["std"] = {k: v[1] for k, v in stats.items()}
        times[run.name] = summary["mean"]["time_s"]
        table.append(_row(run.name, summary, run.training))
    last = runs[-1].name
    for run in runs[:-1]:
        print(
            f"time ratio, interleaved: {run.name} / {last} = {times[run.name] / times[last]:.3f}",
            file=sys.stderr,
        )
    return table


PAIR_HEADER = ",".join(PAIR_COLUMNS)


def _pair_line(pair) -> str:
    """One CSV line of a pair (empty cells for missing label maps)."""
    cells = (getattr(pair, column) for column in PAIR_COLUMNS)
    return ",".join("" if cell is None else str(cell) for cell in cells)


def _nets(args: argparse.Namespace, subset: Path) -> list[str]:
    affine = args.affine_ckpt or _train(
        "ixi_small_affine_net", args.affine_minutes, args.root, args.data
    )
    rdmm = args.rdmm_ckpt or _train(
        "ixi_small_rdmm_net",
        args.rdmm_minutes,
        args.root,
        args.data,
        f"model.affine_checkpoint={affine.resolve()}",
    )
    runs = [
        ("affine-net", affine, 0),
        ("affine-net + rdmm-net", rdmm, 0),
        (f"affine-net + rdmm-net + {args.refine_steps} refine steps", rdmm, args.refine_steps),
    ]
    table = []
    for name, ckpt, refine in runs:
        out = args.root / "eval" / name.replace(" ", "").replace("+", "_")
        print(f"evaluating {name} ({ckpt})", file=sys.stderr, flush=True)
        result = evaluate_pairs(subset, out, checkpoint=ckpt, refine_steps=refine)
        table.append(_row(name, result.summary, _steps(ckpt)))
    return table


if __name__ == "__main__":
    main()
