"""Shooting benchmark: right-hand-side time against the FFT floor, full shoots, peak memory.

    python benchmarks/shooting.py [--device cpu|cuda] [--threads 2] [--repeats 5] [--large]
        [--models svf,lddmm,rdmm] [--shapes 200x200,40x96x96] [--steps 10,20,40]
        [--solvers checkpoint,every-step] [--no-timing] [--no-memory] [--json FILE]
        [--profile [SHAPE]]

Table 1, for vSVF, LDDMM and RDMM (4 Gaussians) at 2D 200x200 and 3D 40x96x96 (and 80x192x192
for LDDMM and RDMM with ``--large``): the time of one right-hand-side evaluation; the "FFT
floor" measured in the same run (exactly the rfftn -> multiply -> irfftn calls that right-hand
side makes with the exact FFT smoothing, at the same padded shapes and channel batching, with
cached kernels, under no_grad); their ratio (in float32 the right-hand side smooths with the
separable operator instead, "separable" in the smoothing column, and can beat that floor); a
full rk4 shoot of 10 steps forward, and forward+backward with the default solver (each step
recomputed in backward, ``checkpoint=True``) and with autograd keeping every step's graph
(``checkpoint=False``; torchdiffeq ran it until 2026-12-03), alternated in the same run, and
their ratio; the peak memory of the default forward+backward. Every time is the median of
``--repeats`` runs after a warm-up, with [min-max].

Table 2: peak memory of the forward+backward (CUDA: max allocated; CPU: sampled peak RSS growth
of a fresh process) for 10, 20 and 40 rk4 steps, both solvers. An every-step row is skipped when
its extrapolated memory does not fit in 80% of the available memory.

``--profile [SHAPE]``: torch.profiler on one RDMM forward+backward (default 40x96x96), per-op
table to ``benchmarks/results/shooting_profile_rdmm.txt`` and where the time goes.

The load of the machine (1-minute load average, other processes above 10% CPU) is printed before
and after each table: timings taken next to other jobs are not comparable between runs, only the
ratios measured in one run. On a shared machine use ``--threads 1``: two OpenMP threads on two
busy cores wait for each other, and single runs then take up to 10x longer.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from rdmm_lightning.ops import finite_differences as fd
from rdmm_lightning.ops import gaussian_smooth, identity_map, normalize_pre_weights
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.smoothing import fft_convolve, fourier_gaussian_kernels
from rdmm_lightning.options import Model, values
from rdmm_lightning.shooting import SolverOptions, make_shooting_unit
from rdmm_lightning.shooting.lddmm import EPDiffDynamics
from rdmm_lightning.shooting.rdmm import RDMMDynamics
from rdmm_lightning.shooting.vsvf import VelocityAdvection

SIGMAS = (0.05, 0.1, 0.15, 0.2)
WEIGHTS = (0.1, 0.2, 0.3, 0.4)
WEIGHT_SIGMA = 0.06
MODELS = values(Model.deformable())
SOLVERS = ("checkpoint", "every-step")
SHAPES = [(200, 200), (40, 96, 96)]
LARGE = [(80, 192, 192)]
LARGE_MODELS = values((Model.LDDMM, Model.RDMM))
STEPS = 10
PROFILE_OUT = Path(__file__).resolve().parent / "results" / "shooting_profile_rdmm.txt"


# ---------------------------------------------------------------------------------------------
# timing and the state of the machine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _times(fns: dict, device: torch.device, repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` runs of each function after one warm-up each; the functions
    alternate (in reversed order every other round) so that they see the same load."""
    for fn in fns.values():
        fn()
    _sync(device)
    out: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            out[name].append(time.perf_counter() - t0)
    return out


def _ms(values: list[float]) -> str:
    """``median [min-max]`` in ms."""
    med = statistics.median(values) * 1e3
    lo, hi = min(values) * 1e3, max(values) * 1e3
    digits = 2 if med < 10 else 0
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def _cpu_ticks() -> dict[int, int]:
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return ticks


def _busy_processes(interval: float = 0.5) -> int | None:
    """Processes other than this one using more than 10% of a CPU over ``interval`` s."""
    if not os.path.isdir("/proc"):
        return None
    before = _cpu_ticks()
    time.sleep(interval)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    busy = [
        pid
        for pid, t in after.items()
        if pid != me and pid in before and (t - before[pid]) / hz / interval > 0.10
    ]
    return len(busy)


def _load_line(when: str) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    busy = _busy_processes()
    others = "?" if busy is None else str(busy)
    return f"{when}: load average (1 min) {load:.2f}; other processes > 10% CPU: {others}"


# ---------------------------------------------------------------------------------------------
# workloads


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

    if kern.separable is not None:
        padded = f"separable; FFT {padded}"
    t = torch.zeros((), dtype=dtype, device=device)
    fns = {"rhs": lambda: dyn(t, state)}
    if floor_fn is not None:
        fns["floor"] = floor_fn
    with torch.no_grad():
        times = _times(fns, device, repeats)
    return times["rhs"], times.get("floor"), padded


def _shoot_fn(model, shape, device, backward, steps=STEPS, checkpoint=True):
    m0, h0, sp = _inputs(shape, device)
    kwargs = {"sigmas": SIGMAS, "solver": SolverOptions("rk4", steps, checkpoint=checkpoint)}
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

    return run


# ---------------------------------------------------------------------------------------------
# peak memory


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _available_mb(device: torch.device) -> float:
    """Free device memory (CUDA) or ``MemAvailable`` (CPU), MB."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


# checkpoint=False keeps every step's graph (figures measured when torchdiffeq ran it): bytes
# per voxel and rk4 step of its forward+backward peak, measured at 40x96x96 on CPU (1.7 / 3.9 /
# 9.7 GB for 10 steps). Only used to skip runs that would not fit in memory.
_EVERY_STEP_BYTES_PER_VOXEL_STEP = {"svf": 500, "lddmm": 1100, "rdmm": 2800}


def _every_step_fits(model, shape, steps, device, measured: dict[int, float]) -> str | None:
    """None if an every-step forward+backward should fit in 80% of the free memory, else why
    not. The estimate scales a measured peak linearly in the steps, or uses the table above."""
    if measured:
        s0 = max(measured)
        estimate = measured[s0] * steps / s0
    else:
        voxels = 1
        for n in shape:
            voxels *= n
        estimate = _EVERY_STEP_BYTES_PER_VOXEL_STEP[model] * voxels * steps / 2**20
    if estimate > 0.8 * _available_mb(device):
        return f"skipped (~{estimate / 1024:.0f} GB)"
    return None


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


def _peak_memory_mb(model, shape, device, threads, steps=STEPS, checkpoint=True) -> float:
    """Peak memory of one forward+backward shoot above what is held before it.

    CUDA: ``max_memory_allocated``. CPU: a fresh subprocess (so no earlier allocation is reused)
    samples its resident set size while it shoots; the inputs are built before the baseline."""
    if device.type == "cuda":
        run = _shoot_fn(model, shape, device, True, steps, checkpoint)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--peak-only",
        model,
        "x".join(map(str, shape)),
        "--threads",
        str(threads),
        "--steps",
        str(steps),
    ] + ([] if checkpoint else ["--no-checkpoint"])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_only(model: str, shape_text: str, steps: int, checkpoint: bool) -> None:
    shape = tuple(int(n) for n in shape_text.split("x"))
    cpu = torch.device("cpu")
    # a tiny shoot first: what the first one in a process loads lazily (e.g. autograd.grad
    # imports sympy, ~40 MB) is not the memory of this shape
    _shoot_fn(model, (8,) * len(shape), cpu, True, 2, checkpoint)()
    run = _shoot_fn(model, shape, cpu, True, steps, checkpoint)
    print(_sampled_peak_mb(run))


def _is_peak(key, value) -> bool:
    """A measured ``steps: MB`` entry of a memory row."""
    return isinstance(key, int) and isinstance(value, float)


def _memory_rows(model, shape, device, threads, steps_list, solvers) -> list[dict]:
    """Peak MB for each step count, one row per solver (default, every-step)."""
    rows = []
    for checkpoint in [s == "checkpoint" for s in solvers]:
        peaks: dict[int, float | str] = {}
        for steps in steps_list:
            measured = {k: v for k, v in peaks.items() if _is_peak(k, v)}
            why = None if checkpoint else _every_step_fits(model, shape, steps, device, measured)
            if why:
                peaks[steps] = why
                continue
            try:
                peaks[steps] = _peak_memory_mb(model, shape, device, threads, steps, checkpoint)
            except (subprocess.CalledProcessError, torch.OutOfMemoryError):
                peaks[steps] = "failed (out of memory?)"
        rows.append({"model": model, "shape": list(shape), "checkpoint": checkpoint, **peaks})
    return rows


# ---------------------------------------------------------------------------------------------
# profile


@contextlib.contextmanager
def _labelled_finite_differences():
    """Wraps the finite-difference kernels in a profiler range so their aten ops can be told
    apart from the other pointwise ops."""
    forward, adjoint = fd._diff_forward, fd._diff_adjoint

    def labelled(fn):
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function("finite_differences"):
                return fn(*args, **kwargs)

        return wrapper

    fd._diff_forward, fd._diff_adjoint = labelled(forward), labelled(adjoint)
    try:
        yield
    finally:
        fd._diff_forward, fd._diff_adjoint = forward, adjoint


_MATRIX_PRODUCTS = ("aten::mm", "aten::bmm", "aten::matmul", "aten::addmm", "aten::baddbmm")


def _category(event) -> str | None:
    """Where an aten op's self time goes: finite differences (by their profiler range),
    smoothing by FFT or by the separable operator (its matrix products), grid_sample, zero
    fills (new gradient buffers; first touches of fresh memory count here), or the other
    (mostly pointwise) ops; None for the events that are not aten ops."""
    node = event
    while node is not None:
        if node.name == "finite_differences":
            return "finite differences"
        node = node.cpu_parent
    name = event.name
    if not name.startswith("aten::"):
        return None
    if "fft" in name:
        return "smoothing (FFT)"
    if name in _MATRIX_PRODUCTS:
        return "smoothing (separable: matrix products)"
    if "grid_sampler" in name:
        return "grid_sample"
    if name in ("aten::fill_", "aten::zero_"):
        return "zero fills (e.g. the backward of indexing)"
    return "pointwise/other"


def _profile(shape, device, threads) -> None:
    run = _shoot_fn("rdmm", shape, device, True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with _labelled_finite_differences():
        run()  # warm-up: kernel caches, FFT plans
        with torch.profiler.profile(activities=activities) as prof:
            run()
            _sync(device)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    totals: dict[str, float] = {}
    for event in prof.events():
        cat = _category(event)
        if cat is not None:
            totals[cat] = totals.get(cat, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    summary = "self CPU time: " + ", ".join(
        f"{cat} {100 * t / whole:.0f}%" for cat, t in sorted(totals.items(), key=lambda x: -x[1])
    )
    head = (
        f"RDMM forward+backward, rk4 {STEPS} steps (checkpoint=True), float32, "
        f"{'x'.join(map(str, shape))}, {threads} threads, torch {torch.__version__}\n"
    )
    PROFILE_OUT.parent.mkdir(parents=True, exist_ok=True)
    PROFILE_OUT.write_text(head + summary + "\n\n" + table + "\n")
    print(head + summary)
    print(f"per-op table: {PROFILE_OUT}")


# ---------------------------------------------------------------------------------------------


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 3:
        raise argparse.ArgumentTypeError(f"shape must look like 200x200 or 40x96x96; got {text}")
    return shape


def _parse_list(text: str, choices: tuple[str, ...]) -> list[str]:
    items = [s for s in text.split(",") if s]
    bad = [s for s in items if s not in choices]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {choices}")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after a warm-up")
    parser.add_argument("--large", action="store_true", help="also 80x192x192 (LDDMM, RDMM)")
    parser.add_argument("--models", type=lambda s: _parse_list(s, MODELS), default=list(MODELS))
    parser.add_argument(
        "--shapes",
        type=lambda s: [_parse_shape(x) for x in s.split(",") if x],
        default=SHAPES,
        help="comma-separated, e.g. 200x200,40x96x96",
    )
    parser.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[10, 20, 40],
        help="rk4 step counts of the memory table",
    )
    parser.add_argument(
        "--solvers",
        type=lambda s: _parse_list(s, SOLVERS),
        default=list(SOLVERS),
        help="memory table rows (and the every-step timing): checkpoint,every-step",
    )
    parser.add_argument("--no-timing", action="store_true", help="only the memory table")
    parser.add_argument("--no-memory", action="store_true", help="only the timing table")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="40x96x96",
        type=_parse_shape,
        metavar="SHAPE",
        help="profile one RDMM forward+backward (default 40x96x96) instead of the tables",
    )
    parser.add_argument("--peak-only", nargs=2, metavar=("MODEL", "SHAPE"), help=argparse.SUPPRESS)
    parser.add_argument("--no-checkpoint", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1; got {args.repeats}")
    torch.set_num_threads(args.threads)
    if args.peak_only:
        _peak_only(*args.peak_only, args.steps[0], not args.no_checkpoint)
        return
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores visible)"
    )
    print(
        f"device: {name}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
        f"float32; sigmas {SIGMAS}; rk4 {STEPS} steps; times: median [min-max] of "
        f"{args.repeats} runs after a warm-up"
    )
    if args.profile:
        print(_load_line("before"))
        _profile(args.profile, device, args.threads)
        print(_load_line("after"))
        return
    jobs = [(shape, model) for shape in args.shapes for model in args.models]
    if args.large:
        jobs += [
            (shape, model) for shape in LARGE for model in args.models if model in LARGE_MODELS
        ]
    timing_rows, memory_rows = [], []
    if not args.no_timing:
        print(_load_line("before"))
        print(
            "| model | shape | smoothing (padded FFT shape) | RHS ms | FFT floor ms | RHS/floor | "
            "shoot fwd ms | fwd+bwd ms | fwd+bwd ms (every step kept) | time ratio | peak MB |"
        )
        print("|" + "---|" * 11)
    for shape, model in jobs:
        rows: list[dict] = []
        if not args.no_memory:
            rows = _memory_rows(model, shape, device, args.threads, args.steps, args.solvers)
            memory_rows += rows
        if args.no_timing:
            continue
        try:
            rhs, floor, padded = _rhs_and_floor(model, shape, device, args.repeats)
            fns = {
                "fwd": _shoot_fn(model, shape, device, False),
                "new": _shoot_fn(model, shape, device, True),
            }
            old_rows = [r for r in rows if not r["checkpoint"]]
            measured = {
                k: v for k, v in (old_rows[0] if old_rows else {}).items() if _is_peak(k, v)
            }
            old_skipped = _every_step_fits(model, shape, STEPS, device, measured)
            if "every-step" not in args.solvers:
                old_skipped = "not asked for"
            if not old_skipped:
                fns["old"] = _shoot_fn(model, shape, device, True, checkpoint=False)
            times = _times(fns, device, args.repeats)
        except torch.OutOfMemoryError:
            print(f"| {model} | {'x'.join(map(str, shape))} | out of memory |")
            continue
        new, old = times["new"], times.get("old")
        ratio = statistics.median(new) / statistics.median(old) if old else None
        new_rows = [r for r in rows if r["checkpoint"]]
        peak = new_rows[0].get(STEPS) if new_rows else None
        row = {
            "model": model,
            "shape": list(shape),
            "padded": str(padded),
            "rhs_ms": [t * 1e3 for t in rhs],
            "floor_ms": [t * 1e3 for t in floor] if floor else None,
            "fwd_ms": [t * 1e3 for t in times["fwd"]],
            "fwd_bwd_ms": [t * 1e3 for t in new],
            "fwd_bwd_every_step_ms": [t * 1e3 for t in old] if old else None,
            "peak_mb": peak,
        }
        timing_rows.append(row)
        floor_s = _ms(floor) if floor else "-"
        rf = f"{statistics.median(rhs) / statistics.median(floor):.2f}" if floor else "(no FFT)"
        old_s = _ms(old) if old else str(old_skipped)
        ratio_s = f"{ratio:.2f}" if ratio else "-"
        peak_s = f"{peak:.0f}" if isinstance(peak, float) else "-"
        print(
            f"| {model} | {'x'.join(map(str, shape))} | {padded} | {_ms(rhs)} | {floor_s} | "
            f"{rf} | {_ms(times['fwd'])} | {_ms(new)} | {old_s} | {ratio_s} | {peak_s} |",
            flush=True,
        )
    if not args.no_timing:
        print(_load_line("after"))
    if memory_rows:
        print()
        print("peak MB of one forward+backward (fresh process), rk4 steps:")
        print("| model | shape | solver | " + " | ".join(f"{s} steps" for s in args.steps) + " |")
        print("|" + "---|" * (3 + len(args.steps)))
        for r in memory_rows:
            cells = [r.get(s) for s in args.steps]
            text = [f"{c:.0f}" if isinstance(c, float) else str(c) for c in cells]
            solver = "checkpoint (default)" if r["checkpoint"] else "every-step"
            shape_s = "x".join(map(str, r["shape"]))
            print(f"| {r['model']} | {shape_s} | {solver} | " + " | ".join(text) + " |")
        print(_load_line("after the memory table"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "timing": timing_rows, "memory": memory_rows}, f, indent=1)


if __name__ == "__main__":
    main()
