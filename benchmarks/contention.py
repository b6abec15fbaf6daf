"""Registration time alone and beside a competing CPU-bound process, with the automatic thread
choice (:func:`rdmm_lightning.runtime.choose_num_threads`) and with a fixed thread count.

    python benchmarks/contention.py [--size 48] [--repeats 3] [--fixed 2] [--warmup 5]
        [--competitor python|matmul] [--iterations 30 15] [--scales 0.5 1.0]

Each measurement is a fresh process (as a user's ``rdmm register``) that registers the same
synthetic 3D pair with lddmm-opt (no affine step) through :func:`rdmm_lightning.register` and
reports the registration time and the thread count torch had during the run. First all runs
alone (automatic and fixed alternating), then the competitor starts (a pure-Python busy loop,
or a one-thread NumPy matmul loop), ``--warmup`` seconds pass, and the same runs repeat beside
it. The table gives median and min-max seconds, the loaded/alone ratio of the medians (fair
share of a 2-core machine with one competitor: 2; goal for the automatic choice: <= 2.5), the
threads chosen, and the 1-minute load average before and after each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BUSY_LOOPS = {
    "python": "while True:\n    pass\n",
    "matmul": (
        "import numpy as np\na = np.random.rand(256, 256)\nwhile True:\n    a = np.tanh(a @ a)\n"
    ),
}


def _worker(size: int, threads: int | None, iterations: list[int], scales: list[float]) -> None:
    """One registration; prints ``{"time_s": ..., "threads": ...}`` as the last line."""
    import rdmm_lightning as rl
    from benchmarks.threads import blob_pair

    src, tgt = blob_pair((size, size, size))
    res = rl.register(
        src,
        tgt,
        "lddmm",
        threads=threads,
        device="cpu",
        affine=False,
        iterations=iterations,
        scales=scales,
    )
    metrics = res.extras["metrics"]
    print(json.dumps({"time_s": metrics["time_s"], "threads": metrics["runtime"]["threads"]}))


def _measure(args: argparse.Namespace, threads: int | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RDMM_NUM_THREADS", "OMP_NUM_THREADS")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--size", str(args.size)]
    cmd += ["--iterations", *map(str, args.iterations), "--scales", *map(str, args.scales)]
    if threads is not None:
        cmd += ["--worker-threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _phase(args: argparse.Namespace, modes: dict[str, int | None]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(args.repeats):
        order = list(modes) if rep % 2 == 0 else list(modes)[::-1]
        for mode in order:
            runs[mode].append(_measure(args, modes[mode]))
            print(f"  {mode}: {runs[mode][-1]}", file=sys.stderr, flush=True)
    return runs


def _cell(runs: list[dict]) -> str:
    t = [r["time_s"] for r in runs]
    return f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="grid size N (N^3 voxels)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fixed", type=int, default=2, help="the fixed thread count to compare")
    parser.add_argument("--warmup", type=float, default=5.0, help="s between competitor and runs")
    parser.add_argument("--competitor", choices=sorted(BUSY_LOOPS), default="python")
    parser.add_argument("--iterations", type=int, nargs="+", default=[30, 15])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.size, args.worker_threads, args.iterations, args.scales)
        return

    import torch

    from rdmm_lightning.runtime import usable_cores

    modes = {"automatic": None, f"fixed {args.fixed}": args.fixed}
    print(
        f"lddmm-opt {args.size}^3, iterations {args.iterations} at scales {args.scales}, "
        f"no affine; torch {torch.__version__}; {os.cpu_count()} CPUs, {usable_cores()} usable; "
        f"{args.repeats} repeats, fresh process each; competitor: {args.competitor} busy loop, "
        f"{args.warmup:.0f} s warm-up",
        flush=True,
    )
    load = [os.getloadavg()[0]]
    alone = _phase(args, modes)
    load.append(os.getloadavg()[0])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOPS[args.competitor]], env=env)
    try:
        time.sleep(args.warmup)
        load.append(os.getloadavg()[0])
        loaded = _phase(args, modes)
        load.append(os.getloadavg()[0])
    finally:
        busy.kill()
        busy.wait()
    print(
        "| threads | time alone s, median (min-max) | time loaded s | loaded/alone | "
        "threads chosen alone / loaded |"
    )
    print("|---|---|---|---|---|")
    for mode in modes:
        ratio = statistics.median(r["time_s"] for r in loaded[mode]) / statistics.median(
            r["time_s"] for r in alone[mode]
        )
        chosen = "/".join(
            ",".join(str(r["threads"]) for r in runs) for runs in (alone[mode], loaded[mode])
        )
        print(f"| {mode} | {_cell(alone[mode])} | {_cell(loaded[mode])} | {ratio:.2f} | {chosen} |")
    print(
        f"1-minute load average: alone {load[0]:.2f}-{load[1]:.2f}, "
        f"loaded {load[2]:.2f}-{load[3]:.2f}"
    )


if __name__ == "__main__":
    main()
