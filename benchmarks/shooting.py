"""Shooting benchmark: right-hand-side time against the FFT floor, full shoots, peak memory.

    python benchmarks/shooting.py [--device cpu|cuda] [--threads 2] [--large] [--repeats 5]

For vSVF, LDDMM and RDMM (4 Gaussians) at 2D 200x200 and 3D 40x96x96 (and 80x192x192 with
``--large``) it prints: the time of one right-hand-side evaluation; the "FFT floor" measured in
the same run (exactly the rfftn -> multiply -> irfftn calls that right-hand side must make, at the
same padded shapes and channel batching, with cached kernels, under no_grad); their ratio; the
time of a full rk4 shoot with 10 steps forward and forward+backward; and the peak memory of the
forward+backward shoot (CUDA: max allocated; CPU: sampled peak RSS growth).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time

import torch

from rdmm_lightning.ops import gaussian_smooth, identity_map, normalize_pre_weights
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import fft_convolve, fourier_gaussian_kernels
from rdmm_lightning.shooting import SolverOptions, make_shooting_unit
from rdmm_lightning.shooting.lddmm import EPDiffDynamics
from rdmm_lightning.shooting.rdmm import RDMMDynamics
from rdmm_lightning.shooting.vsvf import VelocityAdvection

SIGMAS = (0.05, 0.1, 0.15, 0.2)
WEIGHTS = (0.1, 0.2, 0.3, 0.4)
WEIGHT_SIGMA = 0.06
SHAPES = [(200, 200), (40, 96, 96)]
LARGE = [(80, 192, 192)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (kernel caches, allocator)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _inputs(shape, device):
    g = torch.Generator().manual_seed(0)
    dim = len(shape)
    sp = domain_spacing(shape)
    m0 = torch.randn(1, dim, *shape, generator=g)
    m0 = gaussian_smooth(m0, 0.05, sp) * 0.02
    h0 = normalize_pre_weights(
        torch.randn(1, len(SIGMAS), *shape, generator=g), activation="softplus"
    )
    return m0.to(device), h0.to(device), sp


def _rhs_and_floor(model, shape, device, repeats):
    m0, h0, sp = _inputs(shape, device)
    dtype = m0.dtype
    phi = identity_map(shape, sp, dtype=dtype, device=device).clone()
    if model == "svf":
        kern = fourier_gaussian_kernels(
            shape, SIGMAS, sp, weights=WEIGHTS, dtype=dtype, device=device
        )
        dyn = VelocityAdvection(fft_convolve(m0, kern), sp, forward_map=False)
        state = (phi,)
        floor_fn = None
        padded = kern.padded
    elif model == "lddmm":
        kern = fourier_gaussian_kernels(
            shape, SIGMAS, sp, weights=WEIGHTS, dtype=dtype, device=device
        )
        dyn = EPDiffDynamics(kern, sp, forward_map=False)
        state = (m0, phi)
        padded = kern.padded

        def floor_fn():
            dims = tuple(range(-len(shape), 0))
            spec = torch.fft.rfftn(m0, s=kern.padded, dim=dims)
            torch.fft.irfftn(spec * kern.hat[0], s=kern.padded, dim=dims)

    else:
        kern = fourier_gaussian_kernels(shape, SIGMAS, sp, dtype=dtype, device=device)
        gk = fourier_gaussian_kernels(shape, (WEIGHT_SIGMA,), sp, dtype=dtype, device=device)
        dyn = RDMMDynamics(kern, WEIGHT_SIGMA, sp, forward_map=False)
        state = (m0, h0, phi)
        padded = f"{kern.padded} + 2x{gk.padded}"
        n, d = len(SIGMAS), len(shape)
        stack = torch.randn(1, n, d, *shape, dtype=dtype, device=device)
        scalars = h0

        def floor_fn():
            dims = tuple(range(-len(shape), 0))
            for _ in range(2):  # pre-weight smoothing and its adjoint: N scalar channels each
                spec = torch.fft.rfftn(scalars, s=gk.padded, dim=dims)
                torch.fft.irfftn(spec * gk.hat[0], s=gk.padded, dim=dims)
            spec = torch.fft.rfftn(stack, s=kern.padded, dim=dims)  # N*D channels, N kernels
            torch.fft.irfftn(spec * kern.hat.unsqueeze(1), s=kern.padded, dim=dims)

    t = torch.zeros((), dtype=dtype, device=device)
    with torch.no_grad():
        rhs = _time(lambda: dyn(t, state), device, repeats)
        floor = _time(floor_fn, device, repeats) if floor_fn is not None else None
    return rhs, floor, padded


def _shoot(model, shape, device, repeats, backward):
    m0, h0, sp = _inputs(shape, device)
    kwargs = {"sigmas": SIGMAS, "solver": SolverOptions("rk4", 10)}
    if model == "rdmm":
        kwargs["weight_sigma"] = WEIGHT_SIGMA
    else:
        kwargs["weights"] = WEIGHTS
    unit = make_shooting_unit(model, **kwargs)

    def run():
        if backward:
            m = m0.clone().requires_grad_(True)
            h = h0.clone().requires_grad_(True)
            res = unit(m, h if model == "rdmm" else None)
            res.phi_inv.sum().backward()
        else:
            with torch.no_grad():
                unit(m0, h0 if model == "rdmm" else None)

    return _time(run, device, repeats)


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sampled_peak_mb(fn) -> float:
    """Peak resident-set growth while ``fn`` runs, sampled every 0.5 ms by a thread."""
    gc.collect()
    base = _current_rss_mb()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _current_rss_mb())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _current_rss_mb()) - base


def _peak_memory_mb(model, shape, device, threads) -> float:
    """Peak memory of one forward+backward shoot above what is held before it.

    CUDA: ``max_memory_allocated``. CPU: a fresh subprocess (so no earlier allocation is reused)
    samples its resident set size while it shoots; the inputs are built before the baseline."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _shoot(model, shape, device, 0, True)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--peak-only",
        model,
        "x".join(map(str, shape)),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_only(model: str, shape_text: str) -> None:
    shape = tuple(int(n) for n in shape_text.split("x"))
    cpu = torch.device("cpu")
    _inputs(shape, cpu)  # build once so the import-time and input allocations are not counted
    print(_sampled_peak_mb(lambda: _shoot(model, shape, cpu, 0, True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", action="store_true", help="also 80x192x192")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--peak-only", nargs=2, metavar=("MODEL", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak_only:
        _peak_only(*args.peak_only)
        return
    device = torch.device(args.device)
    shapes = SHAPES + (LARGE if args.large else [])
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"CPU ({os.cpu_count()} cores visible, {args.threads} threads)")
    )
    print(f"device: {name}; torch {torch.__version__}; float32; sigmas {SIGMAS}; rk4 10 steps")
    header = (
        "| model | shape | padded FFT shape | RHS ms | FFT floor ms | RHS/floor | "
        "shoot fwd ms | shoot fwd+bwd ms | peak MB (fwd+bwd) |"
    )
    print(header)
    print("|" + "---|" * 9)
    rows = []
    for shape in shapes:
        for model in ("svf", "lddmm", "rdmm"):
            try:
                rhs, floor, padded = _rhs_and_floor(model, shape, device, args.repeats)
                fwd = _shoot(model, shape, device, max(1, args.repeats // 2), False)
                bwd = _shoot(model, shape, device, max(1, args.repeats // 2), True)
                peak = _peak_memory_mb(model, shape, device, args.threads)
            except torch.OutOfMemoryError:
                print(f"| {model} | {shape} | out of memory |")
                continue
            ratio = f"{rhs / floor:.2f}" if floor else "n/a (no FFT)"
            row = {
                "model": model,
                "shape": list(shape),
                "padded": str(padded),
                "rhs_ms": rhs * 1e3,
                "floor_ms": floor * 1e3 if floor else None,
                "fwd_ms": fwd * 1e3,
                "fwd_bwd_ms": bwd * 1e3,
                "peak_mb": peak,
            }
            rows.append(row)
            floor_s = f"{floor * 1e3:.2f}" if floor else "-"
            print(
                f"| {model} | {'x'.join(map(str, shape))} | {padded} | {rhs * 1e3:.2f} | "
                f"{floor_s} | {ratio} | {fwd * 1e3:.0f} | {bwd * 1e3:.0f} | {peak:.0f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
