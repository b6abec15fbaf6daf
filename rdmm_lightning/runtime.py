"""Where and how wide to compute: the device and torch's intra-op thread count.

On a shared CPU box, torch's default of one intra-op thread per core thrashes as soon as other
processes use the cores (threads wait at every parallel region for a thread the scheduler has
parked: a 60x60x45 registration ran 5-6x slower than with one thread). The rule of
:func:`choose_num_threads` avoids that; :func:`num_threads` applies a count for one piece of
work and restores the previous one; :func:`resolve_device` turns ``--device`` into a device.

Where the rule is applied: the registration step of ``rdmm register``/``rdmm evaluate --model``
and :func:`rdmm_lightning.register` (:func:`rdmm_lightning.pipeline.register.register_pair`,
working grid known), the network step of ``rdmm infer``/``rdmm evaluate --checkpoint``
(:meth:`rdmm_lightning.pipeline.network.Network.predict`, called from
:func:`rdmm_lightning.pipeline.run.infer`), ``rdmm warp`` and
:func:`rdmm_lightning.warp` (the transform's grid), ``rdmm data`` (the image size). Training
(``rdmm train``/``train.py``) honours only an explicit request: :func:`apply_process_threads`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

__all__ = [
    "ENV_VAR",
    "VOXELS_PER_THREAD",
    "apply_num_threads",
    "apply_process_threads",
    "busy_cores_elsewhere",
    "choose_num_threads",
    "num_threads",
    "own_recent_load",
    "requested_threads",
    "resolve_device",
    "usable_cores",
]

ENV_VAR = "RDMM_NUM_THREADS"
"""Environment variable with an explicit thread count (below ``--threads``/``threads=``)."""

VOXELS_PER_THREAD = 32**3
"""Working-grid voxels each intra-op thread needs (32,768; also torch's element-wise grain
size). ``benchmarks/threads.py`` on a quiet 2-core EPYC (``benchmarks/results/threads.txt``):
objective evaluations of lddmm-opt and rdmm-opt ran no faster with 2 threads than with 1 up to
40^3 / 256^2 (speed-up 0.88-1.18, noise aside), rdmm-opt gained 1.3-1.5x from 40^3, 56^3 and
384^2. So a second thread from 65,536 voxels; more threads per 32,768 more is an
extrapolation (2 cores measured)."""

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
LOAD_TIME_CONSTANT_S = 60.0  # the kernel's 1-minute load average decays with exp(-t / 60 s)
_RUNNABLE_SAMPLES = 5
_RUNNABLE_INTERVAL_S = 0.01


# ---------------------------------------------------------------------------------------------
# cores and load


def _cgroup_cores(path: str = CGROUP_CPU_MAX) -> int | None:
    """Whole cores of a cgroup v2 CPU quota (``"200000 100000"`` -> 2; at least 1), or None
    without a quota (``"max ..."``, no file, unreadable)."""
    try:
        with open(path) as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) < 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, quota // period)


def usable_cores(cgroup_path: str = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity (``os.sched_getaffinity``; else
    ``os.cpu_count()``), lowered to a cgroup v2 quota (``cpu.max``, whole cores) if smaller."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cores(cgroup_path)
    return max(1, cores if quota is None else min(cores, quota))


def _runnable_now() -> int | None:
    """Runnable tasks on the machine right now, this one excluded (``/proc/loadavg``)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - 1)


# Exponential average of this process's own CPU use in :func:`num_threads` scopes, on the
# 1-minute load average's time scale: (value, time.monotonic() when it was taken).
_own_load: list[float] = [0.0, time.monotonic()]


def decayed_load(load: float, elapsed_s: float, busy: float = 0.0) -> float:
    """A 1-minute load average ``elapsed_s`` seconds later when ``busy`` tasks ran all along:
    ``busy + (load - busy) * exp(-elapsed_s / 60)`` (the kernel's recurrence, continuous)."""
    decay = math.exp(-max(0.0, elapsed_s) / LOAD_TIME_CONSTANT_S)
    return busy + (load - busy) * decay


def own_recent_load(now: float | None = None) -> float:
    """This process's share of the 1-minute load average, from the CPU time its
    :func:`num_threads` scopes used (so that back-to-back registrations in one process do not
    count their own past work as load by others)."""
    load, at = _own_load
    return decayed_load(load, (time.monotonic() if now is None else now) - at)


def _record_own_load(start: float, end: float, cpu_s: float) -> None:
    before = own_recent_load(start)
    busy = cpu_s / (end - start) if end > start else 0.0
    _own_load[:] = [decayed_load(before, end - start, busy), end]


def busy_cores_elsewhere(cores: int | None = None) -> float:
    """How many of this process's usable cores other processes keep busy (estimate).

    The larger of the 1-minute load average minus this process's own recent share
    (:func:`own_recent_load`) and the runnable tasks right now (the least of a few samples
    10 ms apart, so that short-lived tasks and this process's idle-spinning threads drop out;
    it sees a competitor started seconds ago, which the average does not yet). Both count the
    whole machine, so they are scaled by ``cores / os.cpu_count()`` (in a container pinned to
    2 of 64 cores, a load of 32 puts about 1 on ours).
    """
    cores = usable_cores() if cores is None else cores
    try:
        average = os.getloadavg()[0] - own_recent_load()
    except (AttributeError, OSError):
        average = 0.0
    samples = []
    for k in range(_RUNNABLE_SAMPLES):
        if k:
            time.sleep(_RUNNABLE_INTERVAL_S)
        samples.append(_runnable_now())
    now = min((s for s in samples if s is not None), default=0)
    share = min(1.0, cores / (os.cpu_count() or cores))
    return max(0.0, max(average, float(now)) * share)


# ---------------------------------------------------------------------------------------------
# thread count


def _check_count(value: object, name: str, text: bool = False) -> int:
    """``value`` as an integer >= 1 (an int; with ``text`` a string of digits, as environment
    variables hold), else ValueError naming ``name``."""
    if text and isinstance(value, str):
        digits = value.strip()
        if digits.isdigit() and int(digits) >= 1:
            return int(digits)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def requested_threads(
    requested: int | None = None, environ: Mapping[str, str] | None = None
) -> int | None:
    """The explicitly requested thread count: ``requested`` (``--threads``/``threads=``), else
    ``RDMM_NUM_THREADS``, else None (automatic). ValueError (one line naming ``threads`` or the
    variable) for a value that is not an integer >= 1."""
    if requested is not None:
        return _check_count(requested, "threads")
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    if raw is None or not raw.strip():
        return None
    return _check_count(raw, ENV_VAR, text=True)


def _omp_cap(environ: Mapping[str, str]) -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive integer (a user's cap), else None."""
    raw = environ.get("OMP_NUM_THREADS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


def choose_num_threads(
    requested: int | None,
    working_voxels: int | None,
    *,
    cores: int | None = None,
    busy: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """The intra-op thread count for work on a grid of ``working_voxels`` voxels.

    Rule, first match wins:

    1. ``requested`` (``--threads N``, ``threads=N``, the ``threads`` option) if given;
    2. ``RDMM_NUM_THREADS`` if set;
    3. automatic: ``min(cores, grid cap, free cores, OMP_NUM_THREADS)``, at least 1, where

       * ``cores`` = :func:`usable_cores` (affinity, cgroup quota);
       * grid cap = ``working_voxels // VOXELS_PER_THREAD`` (small grids gain nothing from
         threads: one thread below 32^3 = 32,768 voxels (~181^2), two from 65,536 (~40^3,
         256^2); no cap when ``working_voxels`` is None);
       * free cores = ``cores - round(busy)``, ``busy`` = :func:`busy_cores_elsewhere` (other
         processes' load on our cores: sharing a core with a busy process makes every parallel
         region wait for the slowest thread);
       * ``OMP_NUM_THREADS``, if set, caps the automatic choice.

    ``cores``, ``busy`` and ``environ`` replace the measured values (tests, benchmarks).
    Raises ValueError (one line) for a bad ``requested``/``RDMM_NUM_THREADS``/voxel count.
    """
    env = os.environ if environ is None else environ
    explicit = requested_threads(requested, env)
    if explicit is not None:
        return explicit
    cores = usable_cores() if cores is None else _check_count(cores, "cores")
    cap = cores
    if working_voxels is not None:
        voxels = _check_count(working_voxels, "working_voxels")
        cap = min(cap, max(1, voxels // VOXELS_PER_THREAD))
    omp = _omp_cap(env)
    if omp is not None:
        cap = min(cap, omp)
    if cap == 1:
        return 1  # no need to measure the load
    busy = busy_cores_elsewhere(cores) if busy is None else max(0.0, float(busy))
    free = cores - math.floor(busy + 0.5)
    return max(1, min(cap, free))


def apply_num_threads(n: int) -> int:
    """Set torch's intra-op thread count to ``n`` (and the inter-op count while torch still
    allows it, i.e. before any inter-op work started); returns the previous intra-op count."""
    n = _check_count(n, "threads")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # inter-op pool already started (or set): keep it
        pass
    return previous


@contextmanager
def num_threads(n: int) -> Iterator[int]:
    """``with num_threads(n):`` run with ``n`` intra-op threads, then restore the previous
    count; the CPU time used counts as this process's own load (:func:`own_recent_load`)."""
    previous = apply_num_threads(n)
    start, cpu = time.monotonic(), time.process_time()
    try:
        yield n
    finally:
        _record_own_load(start, time.monotonic(), time.process_time() - cpu)
        torch.set_num_threads(previous)


def apply_process_threads(requested: int | None) -> int | None:
    """For entry points that own the whole process (training): an explicit request
    (``requested``, else ``RDMM_NUM_THREADS``) sets torch's thread count and exports
    ``OMP_NUM_THREADS`` so that processes started later inherit it (Lightning's DDP launchers
    then keep it instead of giving each of P processes ``cores // P`` threads); returns the
    count. Without a request nothing changes and None is returned."""
    n = requested_threads(requested)
    if n is not None:
        apply_num_threads(n)
        os.environ["OMP_NUM_THREADS"] = str(n)
    return n


# ---------------------------------------------------------------------------------------------
# device


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None): CUDA when available, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``. ValueError (one line naming ``--device``) for other values, CUDA requested
    on a machine without it, or a CUDA index beyond the devices present."""
    text = "auto" if name is None else str(name).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = text[5:] if text.startswith("cuda:") else None
    if text not in ("cpu", "cuda") and not (index is not None and index.isdigit()):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {text!r}")
    device = torch.device(text)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {text}: CUDA is not available on this machine (use --device auto or cpu)"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {text}: this machine has {count} CUDA device(s)")
    return device
