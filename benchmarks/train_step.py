"""Training throughput per model: seconds per training step, its split, and peak memory.

    python benchmarks/train_step.py [--models affine,svf,lddmm,rdmm] [--dims 2,3] [--repeats 5]
        [--threads 2] [--device auto|cpu|cuda[:N]] [--num-steps K] [--solver-steps N]
        [--size 128] [--shape3d 64x80x80] [--data3d auto|ixi|synth3d] [--json FILE]
        [--profile] [key=value ...]

Rows: 2D 128x128 with batch 2 from ``experiment=synth2d_{svf,lddmm,rdmm}_net`` (the synth2d
PairDataModule; there is no 2D affine-net config, so no 2D affine row), and 3D 64x80x80 with
batch 1 from ``experiment=ixi_small_{affine,rdmm}_net``; 3D svf/lddmm are
``experiment=ixi_small_rdmm_net model={svf,lddmm}_net`` with the kernel weights of
``ixi_{svf,lddmm}_net``. Configs are composed by the training app's own compose function
(:func:`rdmm_lightning.training.compose.compose_train_config`) and built with Hydra's
``instantiate``, as ``train.py`` builds them. 3D data: IXI when ``data.data_dir`` (``RDMM_IXI_DIR``,
default ``../shared/data/ixi``) exists, else the synthetic 3D knee phantoms with the same
preprocessing and batch 1 (``--data3d``). Without ``RDMM_IXI_AFFINE_CKPT`` the frozen affine stage
of the 3D deformable nets is the ixi_small_affine_net architecture with untrained weights (same
cost). ``--num-steps``/``--solver-steps`` override ``model.num_steps``/``model.solver_steps`` of
the deformable nets; further ``key=value`` overrides go to every row.

A step is what Lightning's automatic optimisation does per batch, called directly (no Trainer):
``module.training_step(batch)``, ``loss.backward()``, ``optimizer.step()``, ``zero_grad``.
Every row runs in a fresh process: one warm-up step, then ``--repeats`` timed steps, each on a new
batch. The split is measured with explicit timers (``torch.cuda.synchronize`` at every boundary
on CUDA), each also a ``torch.profiler.record_function`` range: the module's own methods are
wrapped on the instance (no library code changes) -- network = the affine stage and the
momentum/pre-weight UNets (``affine_maps``, ``net.predict_parameters``; the affine net's
``forward`` for affine-net), shooting = ``net.shoot`` (integration, upsampling, composition),
similarity + regularisers = ``objective`` (affine-net: the similarity), backward + optimizer =
``backward``, ``step`` and ``zero_grad``. Nested timers count exclusive time. "other" is the rest
of the step (final warp, logging into the metrics); a split that misses a part shows as a large
"other" (the test checks the named parts add up to the step time within 20%). Data is timed
outside the step: one batch from the training DataLoader in this process (``num_workers=0``:
reading, preprocessing, collation) and its transfer to the device; in training, workers produce
it beside the step. steps/s is 1 / the median step time (data not included). "CPU s/step" is
the CPU time of the process per step (all its threads): with ``--threads 1`` on a busy machine
it is about what the step would take alone; the wall time also holds the waits for a core.

Memory: the resident-set high-water mark of the row's process (``ru_maxrss``: interpreter,
torch, data, model and the steps), and its resident set before the first step; on CUDA also
``torch.cuda.max_memory_allocated`` over the steps. The load of the machine is printed before and
after the table: rows measured beside other jobs are not comparable between runs. On a shared
machine use ``--threads 1`` and ``nice``.

``--profile``: instead of the table, torch.profiler on one step of each row after the warm-up;
prints the per-part time and the top ops by self CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rdmm_lightning.options import Model, values
from rdmm_lightning.runtime import resolve_device

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.shooting import _current_rss_mb, _load_line  # noqa: E402

MODELS = values(Model)
DIMS = (2, 3)
NETWORK, SHOOTING, LOSS, BACKWARD = (
    "network",
    "shooting",
    "similarity + regularisers",
    "backward + optimizer",
)
PARTS = (NETWORK, SHOOTING, LOSS, BACKWARD)
"""The named parts of a step (the rest is "other")."""
TOLERANCE = 0.2
"""The named parts must add up to the step time within this fraction."""
COLUMNS = (
    "model",
    "grid (batch)",
    "steps/s",
    "s/step",
    "CPU s/step",
    "data s",
    "network s",
    "shooting s",
    "sim+reg s",
    "bwd+opt s",
    "other s",
    "parts/step",
    "peak RSS MB",
    "RSS before MB",
    "peak CUDA MB",
)
DEFAULT_SHAPE3D = (64, 80, 80)
DATA3D = ("auto", "ixi", "synth3d")


# ---------------------------------------------------------------------------------------------
# configs


def _listing(values_: Sequence[Any]) -> str:
    return "[" + ",".join(str(v) for v in values_) + "]"


def row_overrides(model: str, dim: int, args: argparse.Namespace) -> list[str] | None:
    """The overrides that compose the training config of one row (None: no config for it)."""
    deformable = model != Model.AFFINE.value
    if dim == 2:
        if not deformable:
            return None
        shape = (args.size, args.size)
        words = [f"experiment=synth2d_{model}_net"]
    else:
        shape = args.shape3d
        words = [f"experiment=ixi_small_{'affine' if not deformable else 'rdmm'}_net"]
        if model in (Model.SVF.value, Model.LDDMM.value):
            weights = _composed(f"experiment=ixi_{model}_net").model.kernel_weights
            words += [f"model={model}_net", f"model.kernel_weights={_listing(weights)}"]
        if deformable and not os.environ.get("RDMM_IXI_AFFINE_CKPT"):
            affine = _composed("experiment=ixi_small_affine_net").model
            from rdmm_lightning.models.affine_module import AFFINE_NET_KEYS

            net = {"dim": 3, **{k: affine[k] for k in AFFINE_NET_KEYS}}
            text = ",".join(
                f"{k}:{_listing(v) if not isinstance(v, (str, int)) else v}" for k, v in net.items()
            )
            words += ["model.affine_checkpoint=null", f"+model.affine_net={{{text}}}"]
        if args.data3d == "synth3d" or (args.data3d == "auto" and not _ixi_available()):
            words += ["data=synth3d", "data.batch_size=1"]
    words += [
        f"data.preprocessing.resize_shape={_listing(shape)}",
        f"model.image_shape={_listing(shape)}",
        "data.num_workers=0",
    ]
    if deformable and args.num_steps is not None:
        words.append(f"model.num_steps={args.num_steps}")
    if deformable and args.solver_steps is not None:
        words.append(f"model.solver_steps={args.solver_steps}")
    return words + list(args.overrides)


def _composed(*overrides: str):
    from rdmm_lightning.training.compose import compose_train_config

    return compose_train_config(list(overrides)).cfg


def _ixi_available() -> bool:
    return Path(str(_composed("experiment=ixi_small_affine_net").data.data_dir)).is_dir()


def compose_row(overrides: Sequence[str]):
    """The checked training config of a row (TrainingConfigError when it is wrong)."""
    from rdmm_lightning.training.checks import check_config

    cfg = _composed(*overrides)
    check_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# the split


class SplitTimer:
    """Exclusive seconds per part: a part's time excludes the parts nested in it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = {}
        self._children: list[float] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        with torch.profiler.record_function(f"train_step: {name}"):
            self.sync()
            start = time.perf_counter()
            self._children.append(0.0)
            try:
                yield
            finally:
                self.sync()
                elapsed = time.perf_counter() - start
                inner = self._children.pop()
                self.totals[name] = self.totals.get(name, 0.0) + elapsed - inner
                if self._children:
                    self._children[-1] += elapsed


def _wrap(owner: Any, attr: str, timer: SplitTimer, part: str) -> None:
    """Replace ``owner.attr`` (a bound method) on the instance by a timed call of it."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        with timer.part(part):
            return fn(*args, **kwargs)

    object.__setattr__(owner, attr, timed)


def instrument(module: torch.nn.Module, timer: SplitTimer) -> None:
    """Time the network, shooting and loss methods of a registration LightningModule."""
    from rdmm_lightning.models import AffineNetModule, RegistrationNetModule

    if isinstance(module, RegistrationNetModule):
        _wrap(module, "affine_maps", timer, NETWORK)
        _wrap(module.net, "predict_parameters", timer, NETWORK)
        _wrap(module.net, "shoot", timer, SHOOTING)
        _wrap(module, "objective", timer, LOSS)
    elif isinstance(module, AffineNetModule):
        _wrap(module.net, "forward", timer, NETWORK)
        _wrap(module.similarity, "forward", timer, LOSS)
    else:
        raise TypeError(f"no split for {type(module).__name__}")


def split_coverage(records: Sequence[Mapping[str, float]]) -> float:
    """Sum of the named parts over the sum of the step times of ``records`` (one dict per
    timed step: ``step`` and the seconds of each part in :data:`PARTS` it ran)."""
    parts = sum(r.get(p, 0.0) for r in records for p in PARTS)
    return parts / sum(r["step"] for r in records)


def split_adds_up(records: Sequence[Mapping[str, float]], tolerance: float = TOLERANCE) -> bool:
    """Whether the named parts add up to the step time within ``tolerance``."""
    return abs(split_coverage(records) - 1.0) <= tolerance


def summarise(records: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Median (and min, max) of the step and data times and the median of each part."""
    step = [r["step"] for r in records]
    other = [r["step"] - sum(r.get(p, 0.0) for p in PARTS) for r in records]
    return {
        "step_s": [statistics.median(step), min(step), max(step)],
        "steps_per_s": 1.0 / statistics.median(step),
        "cpu_s": statistics.median(r["cpu"] for r in records),
        "data_s": statistics.median(r["data"] for r in records),
        "parts_s": {p: statistics.median(r.get(p, 0.0) for r in records) for p in PARTS},
        "other_s": statistics.median(other),
        "coverage": split_coverage(records),
    }


# ---------------------------------------------------------------------------------------------
# one row (in a fresh process)


def _batches(datamodule) -> Iterator[dict[str, Any]]:
    """Training batches, epoch after epoch."""
    epoch = 0
    while True:
        datamodule.set_epoch(epoch)
        yield from datamodule.train_dataloader()
        epoch += 1


def _optimizer(module) -> torch.optim.Optimizer:
    config = module.configure_optimizers()
    return config["optimizer"] if isinstance(config, dict) else config


def run_row(overrides: Sequence[str], device: torch.device, repeats: int, profile: bool) -> dict:
    """Build the row's data module and model, run 1 + ``repeats`` steps; times and memory."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    cfg = compose_row(overrides)
    if cfg.seed is not None:
        pl.seed_everything(int(cfg.seed), verbose=False)
    if cfg.float32_matmul_precision:
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    module = instantiate(cfg.model, _convert_="all").to(device).train()
    optimizer = _optimizer(module)
    timer = SplitTimer(device)
    instrument(module, timer)
    batches = _batches(datamodule)
    shape = list(module.image_shape)

    def step(index: int) -> dict[str, float]:
        timer.totals = {}
        timer.sync()
        start = time.perf_counter()
        with torch.profiler.record_function("train_step: data"):
            batch = module.transfer_batch_to_device(next(batches), device, 0)
        timer.sync()
        data = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        loss = module.training_step(batch, index)
        with timer.part(BACKWARD):
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        timer.sync()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        size = int(batch["source"].shape[0])
        return {"data": data, "step": seconds, "cpu": cpu, "batch": size, **timer.totals}

    rss_before = _current_rss_mb()
    first = step(0)
    if profile:
        return {"shape": shape, "batch": first["batch"], "profile": _profile(step, device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    records = [step(i + 1) for i in range(repeats)]
    return {
        "shape": shape,
        "batch": first["batch"],
        "records": records,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
        "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }


def _profile(step, device: torch.device) -> str:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        record = step(1)
    parts = ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in ("batch",))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    return f"seconds: {parts}\n{table}"


def _worker(args: argparse.Namespace) -> None:
    model, dim = args.worker[0], int(args.worker[1])
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torchio.*")
    overrides = row_overrides(model, dim, args)
    result = run_row(overrides, resolve_device(args.device), args.repeats, args.profile)
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# table


def _s(value: float) -> str:
    return f"{value:.3g}"


def format_row(model: str, row: Mapping[str, Any]) -> str:
    """One markdown table row (:data:`COLUMNS`) of a measured row."""
    grid = "x".join(map(str, row["shape"])) + f" ({row['batch']})"
    if "error" in row:
        return f"| {model} | {grid} | {row['error']} |"
    s = row["summary"]
    med, lo, hi = s["step_s"]
    cuda = "-" if row["peak_cuda_mb"] is None else f"{row['peak_cuda_mb']:.0f}"
    cells = [
        model,
        grid,
        f"{s['steps_per_s']:.2f}",
        f"{_s(med)} [{_s(lo)}-{_s(hi)}]",
        _s(s["cpu_s"]),
        _s(s["data_s"]),
        *(_s(s["parts_s"][p]) for p in PARTS),
        _s(s["other_s"]),
        f"{s['coverage']:.2f}",
        f"{row['peak_rss_mb']:.0f}",
        f"{row['rss_before_mb']:.0f}",
        cuda,
    ]
    return "| " + " | ".join(cells) + " |"


def _run_worker(model: str, dim: int, argv: Sequence[str]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", model, str(dim)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        return {"error": f"failed: {lines[-1] if lines else f'exit code {out.returncode}'}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def _parse_list(text: str, choices: Sequence[str], what: str) -> list[str]:
    items = [s for s in text.split(",") if s]
    bad = [s for s in items if s not in choices]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what}: choose from {','.join(choices)}; got {text!r}")
    return items


def _parse_shape3d(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 8:
        raise argparse.ArgumentTypeError(f"must look like 64x80x80 (sizes >= 8); got {text!r}")
    return shape


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=lambda s: _parse_list(s, MODELS, "models"), default=MODELS)
    p.add_argument(
        "--dims",
        type=lambda s: [int(d) for d in _parse_list(s, ("2", "3"), "dims")],
        default=list(DIMS),
    )
    p.add_argument("--repeats", type=_positive, default=5, help="timed steps after a warm-up")
    p.add_argument("--threads", type=_positive, default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--num-steps", type=_positive, help="refinement steps K (deformable nets)")
    p.add_argument("--solver-steps", type=_positive, help="solver steps (deformable nets)")
    p.add_argument("--size", type=_positive, default=128, help="2D grid size (default 128)")
    p.add_argument("--shape3d", type=_parse_shape3d, default=DEFAULT_SHAPE3D)
    p.add_argument("--data3d", choices=DATA3D, default="auto", help="3D data (auto: IXI if found)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--profile", action="store_true", help="profile one step of each row")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, all rows")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "DIM"), help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error(f"--size must be >= 8; got {args.size}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    if args.worker:
        _worker(args)
        return
    from rdmm_lightning.training.errors import TrainingConfigError

    jobs, skipped = [], []
    for dim in args.dims:
        for model in args.models:
            overrides = row_overrides(model, dim, args)
            if overrides is None:
                skipped.append(f"{model}-net {dim}D")
                continue
            try:
                compose_row(overrides)
            except TrainingConfigError as exc:
                parser.error(f"{model}-net {dim}D config: {exc}")
            jobs.append((model, dim))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name} ({os.cpu_count()} cores visible); {args.threads} threads; torch "
        f"{torch.__version__}; float32; s/step: median [min-max] of {args.repeats} steps after "
        f"a warm-up; parts: medians; data: one batch in-process (not in s/step)"
    )
    if args.overrides:
        print(f"overrides: {' '.join(args.overrides)}")
    if skipped:
        print(f"no training config (skipped): {', '.join(skipped)}")
    print(_load_line("before"))
    if not args.profile:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
    rows = []
    for model, dim in jobs:
        row = {"model": model, "dim": dim, **_run_worker(model, dim, argv)}
        if args.profile:
            print(f"\n## {model}-net {dim}D\n{row.get('profile', row.get('error'))}", flush=True)
            continue
        row.setdefault("shape", list(args.shape3d) if dim == 3 else [args.size] * 2)
        row.setdefault("batch", "?")
        if "records" in row:
            row["summary"] = summarise(row["records"])
        print(format_row(f"{model}-net", row), flush=True)
        rows.append(row)
    print(_load_line("after"))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
