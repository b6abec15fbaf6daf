"""Where do intra-op threads start to pay off? Objective evaluations of lddmm-opt and rdmm-opt
(shooting at half resolution: FFT smoothing and finite differences, warp, LNCC, backward) with 1
and 2 (or ``--threads``) threads over a range of 2D and 3D working grids.

    python benchmarks/threads.py [--threads 1 2] [--repeats 3] [--models lddmm rdmm] [--quick]
        [--grids 64x64 32x32x32 ...]

For each model and grid, ``register_tensors`` runs ``--iterations`` L-BFGS iterations at one
scale (no affine step) and the time per objective evaluation is taken from its history (the
first evaluation, with kernel set-up, left out). Thread counts alternate inside each repeat so
that a change of load hits both; the table gives the median ms per evaluation, the speed-up of
the largest count over 1 thread and the 1-minute load average before and after the row. The
grid cap of :func:`rdmm_lightning.runtime.choose_num_threads` (``VOXELS_PER_THREAD``) is the
smallest grid where the speed-up is clearly above 1 on a quiet machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics

import torch

from rdmm_lightning.optimize import register_tensors
from rdmm_lightning.runtime import VOXELS_PER_THREAD, usable_cores

GRIDS = [
    (64, 64),
    (96, 96),
    (128, 128),
    (192, 192),
    (256, 256),
    (16, 16, 16),
    (24, 24, 24),
    (32, 32, 32),
    (40, 40, 40),
    (48, 48, 48),
]
QUICK = [(64, 64), (128, 128), (16, 16, 16), (32, 32, 32)]


def blob_pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth source ``(1, 1, *S)`` in [0, 1] and the same blobs shifted a little."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(0, 1, n, dtype=torch.float64) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (D, *S)
    centres = 0.25 + 0.5 * torch.rand(6, len(shape), generator=g, dtype=torch.float64)
    shift = torch.full((len(shape),), 0.04, dtype=torch.float64)

    def render(offset: torch.Tensor) -> torch.Tensor:
        img = torch.zeros(shape, dtype=torch.float64)
        for c in centres:
            d2 = ((grid - (c + offset).view(-1, *[1] * len(shape))) ** 2).sum(0)
            img = img + torch.exp(-d2 / (2 * 0.08**2))
        return (img / img.max()).float()[None, None]

    return render(torch.zeros_like(shift)), render(shift)


def ms_per_evaluation(model: str, src: torch.Tensor, tgt: torch.Tensor, iterations: int) -> float:
    result = register_tensors(
        src, tgt, model, affine=False, scales=[1.0], iterations=[iterations], fold_free=False
    )
    hist = [h for h in result.history if h.get("stage") == model]
    first, last = hist[0], hist[-1]
    evals = last["evaluations"] - first["evaluations"]
    if evals < 1:
        raise RuntimeError(f"{model}: the optimiser stopped after one evaluation")
    return 1e3 * (last["time_s"] - first["time_s"]) / evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=["lddmm", "rdmm"])
    parser.add_argument("--quick", action="store_true", help="four grids only")
    parser.add_argument("--grids", nargs="+", metavar="AxB[xC]", help="these grids instead")
    args = parser.parse_args()
    grids = QUICK if args.quick else GRIDS
    if args.grids:
        grids = [tuple(int(n) for n in g.split("x")) for g in args.grids]
    counts = sorted(set(args.threads))
    print(
        f"torch {torch.__version__}; {os.cpu_count()} CPUs, {usable_cores()} usable; "
        f"threads {counts}; {args.repeats} repeats (median); {args.iterations} L-BFGS iterations "
        f"at one scale; current VOXELS_PER_THREAD = {VOXELS_PER_THREAD}"
    )
    head = " | ".join(f"{n} thr ms/eval" for n in counts)
    print(f"| model | grid | voxels | {head} | speed-up {counts[-1]} vs 1 | load before-after |")
    print("|" + "---|" * (5 + len(counts)))
    for model in args.models:
        for shape in grids:
            src, tgt = blob_pair(shape)
            load0 = os.getloadavg()[0]
            times: dict[int, list[float]] = {n: [] for n in counts}
            for rep in range(args.repeats):
                order = counts if rep % 2 == 0 else counts[::-1]
                for n in order:
                    torch.set_num_threads(n)
                    times[n].append(ms_per_evaluation(model, src, tgt, args.iterations))
            med = {n: statistics.median(v) for n, v in times.items()}
            cells = " | ".join(f"{med[n]:.1f}" for n in counts)
            speedup = med[counts[0]] / med[counts[-1]]
            grid = "x".join(map(str, shape))
            print(
                f"| {model} | {grid} | {math.prod(shape)} | {cells} | {speedup:.2f} | "
                f"{load0:.2f}-{os.getloadavg()[0]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
