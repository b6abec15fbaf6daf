"""Validation Dice against training steps (and wall minutes, when the run logged them) of runs.

    python benchmarks/learning_curves.py RUN_DIR[=LABEL] ... --out docs/figures/curves.png

Each RUN_DIR is a training run folder (``checkpoints/<name>/<timestamp>``) whose CSV log holds
``val/dice``; wall minutes come from ``time/elapsed_min`` (the ``ElapsedTime`` callback of
``configs/callbacks/default.yaml``; runs without it are drawn against steps only). Prints the
curve as a table (epoch, step, minutes, validation Dice) per run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_curve(run_dir: Path) -> list[dict[str, float | None]]:
    """``[{epoch, step, dice, minutes}]`` of the run's validation epochs (minutes: the latest
    ``time/elapsed_min`` logged at or before that step, or None)."""
    logs = sorted(run_dir.rglob("metrics.csv"))
    if not logs:
        raise SystemExit(f"{run_dir}: no metrics.csv below it")
    rows: list[dict[str, str]] = []
    for path in logs:
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    times = sorted(
        (int(r["step"]), float(r["time/elapsed_min"])) for r in rows if r.get("time/elapsed_min")
    )
    curve = []
    for r in rows:
        if not r.get("val/dice"):
            continue
        step = int(r["step"])
        done = [m for s, m in times if s <= step]
        curve.append(
            {"epoch": int(r["epoch"]), "step": step, "dice": float(r["val/dice"]),
             "minutes": done[-1] if done else None}
        )  # fmt: skip
    return curve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR=LABEL")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--title", default="validation Dice")
    p.add_argument(
        "--ylim",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="Dice axis range (default: auto)",
    )
    args = p.parse_args(argv)
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    by_step, by_time = fig.subplots(1, 2)
    for index, item in enumerate(args.runs):
        color = f"C{index % 10}"  # one colour per run in both panels
        path, _, label = item.partition("=")
        curve = read_curve(Path(path))
        label = label or Path(path).parent.name
        print(f"\n{label} ({path})\n| epoch | step | minutes | val Dice |\n|---|---|---|---|")
        for c in curve:
            minutes = "-" if c["minutes"] is None else f"{c['minutes']:.1f}"
            print(f"| {c['epoch']} | {c['step']} | {minutes} | {c['dice']:.4f} |")
        by_step.plot([c["step"] for c in curve], [c["dice"] for c in curve], color, label=label)
        timed = [c for c in curve if c["minutes"] is not None]
        if timed:
            minutes = [c["minutes"] for c in timed]
            by_time.plot(minutes, [c["dice"] for c in timed], color, label=label)
    by_step.set_xlabel("training steps")
    by_time.set_xlabel("wall minutes (runs that logged time/elapsed_min)")
    for ax in (by_step, by_time):
        ax.set_ylabel("validation Dice")
        ax.grid(alpha=0.3)
        if args.ylim:
            ax.set_ylim(*args.ylim)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
