"""Thread count and device choice (:mod:`rdmm_lightning.runtime`), and the ``threads=`` /
``device=`` parameters of the Python API."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest
import torch

import rdmm_lightning as rl
from rdmm_lightning import runtime as R

NO_ENV: dict[str, str] = {}
BIG = 10**9  # voxels: no grid cap


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------
# the rule


def test_precedence_argument_over_environment_over_automatic():
    env = {R.ENV_VAR: "5", "OMP_NUM_THREADS": "1"}
    assert R.choose_num_threads(3, BIG, cores=2, busy=0, environ=env) == 3
    assert R.choose_num_threads(None, BIG, cores=2, busy=0, environ=env) == 5
    # explicit values are not capped by the grid, the cores or the load
    assert R.choose_num_threads(None, 8, cores=2, busy=9, environ=env) == 5
    assert R.choose_num_threads(4, 8, cores=2, busy=9, environ=NO_ENV) == 4
    # automatic: all usable cores on a big grid of a quiet machine
    assert R.choose_num_threads(None, BIG, cores=2, busy=0, environ=NO_ENV) == 2
    assert R.choose_num_threads(None, None, cores=6, busy=0, environ={R.ENV_VAR: " "}) == 6
    assert R.requested_threads(None, {R.ENV_VAR: "7"}) == 7
    assert R.requested_threads(2, {R.ENV_VAR: "7"}) == 2
    assert R.requested_threads(None, NO_ENV) is None


def test_small_grids_get_one_thread_and_the_cap_grows_with_the_grid():
    v = R.VOXELS_PER_THREAD
    for voxels in (1, 20**3, 64**2, v - 1):
        assert R.choose_num_threads(None, voxels, cores=8, busy=0, environ=NO_ENV) == 1, voxels
    assert R.choose_num_threads(None, 2 * v, cores=8, busy=0, environ=NO_ENV) == 2
    assert R.choose_num_threads(None, 3 * v + 1, cores=8, busy=0, environ=NO_ENV) == 3
    assert R.choose_num_threads(None, 100 * v, cores=8, busy=0, environ=NO_ENV) == 8


def test_load_of_other_processes_lowers_the_count_never_below_one():
    def pick(busy: float, cores: int = 4) -> int:
        return R.choose_num_threads(None, BIG, cores=cores, busy=busy, environ=NO_ENV)

    assert [pick(b) for b in (0.0, 0.4, 0.6, 1.4, 2.6, 3.5, 50.0)] == [4, 4, 3, 3, 1, 1, 1]
    assert pick(1.0, cores=2) == 1 and pick(0.3, cores=2) == 2 and pick(0.0, cores=1) == 1


def test_omp_num_threads_caps_the_automatic_choice():
    env = {"OMP_NUM_THREADS": "2"}
    assert R.choose_num_threads(None, BIG, cores=8, busy=0, environ=env) == 2
    assert R.choose_num_threads(6, BIG, cores=8, busy=0, environ=env) == 6
    junk = {"OMP_NUM_THREADS": "many"}  # not ours to validate: ignored
    assert R.choose_num_threads(None, BIG, cores=8, busy=0, environ=junk) == 8


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "3"])
def test_bad_thread_counts_are_one_line_errors(value):
    with pytest.raises(ValueError) as exc:
        R.choose_num_threads(value, BIG, environ=NO_ENV)
    assert _one_line(exc).startswith("threads must be an integer >= 1")
    with pytest.raises(ValueError):
        R.apply_num_threads(value)
    with pytest.raises(ValueError) as exc:
        R.choose_num_threads(None, value, cores=2, busy=0, environ=NO_ENV)
    assert _one_line(exc).startswith("working_voxels must be an integer >= 1")


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "2.5", "1e3"])
def test_bad_environment_variable_is_a_one_line_error_naming_it(raw):
    with pytest.raises(ValueError) as exc:
        R.choose_num_threads(None, BIG, cores=2, busy=0, environ={R.ENV_VAR: raw})
    message = _one_line(exc)
    assert message.startswith(f"{R.ENV_VAR} must be an integer >= 1") and repr(raw) in message
    # an explicit argument wins, so the variable is not even read
    assert R.choose_num_threads(2, BIG, environ={R.ENV_VAR: raw}) == 2


# ---------------------------------------------------------------------------------------------
# cores and load


def test_usable_cores_respects_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    missing = str(tmp_path / "none")
    assert R.usable_cores(missing) == affinity
    cases = {"max 100000": affinity, "50000 100000": 1, "150000 100000": 1, "junk": affinity}
    cases[f"{100000 * (affinity + 3)} 100000"] = affinity  # a quota above the affinity
    for text, want in cases.items():
        quota.write_text(text + "\n")
        assert R.usable_cores(str(quota)) == want, text
    quota.write_text("250000 100000\n")
    assert R.usable_cores(str(quota)) == min(affinity, 2)


_AFFINITY_PROBE = """
import os, sys
from rdmm_lightning import runtime as R
os.environ.pop("OMP_NUM_THREADS", None); os.environ.pop(R.ENV_VAR, None)
if sys.argv[1] == "pin":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(R.usable_cores(), R.choose_num_threads(None, 10**9, busy=0))
"""


def test_affinity_restricted_process_gets_one_thread():
    def probe(mode: str) -> list[int]:
        cmd = [sys.executable, "-c", _AFFINITY_PROBE, mode]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return [int(v) for v in out.split()]

    assert probe("pin") == [1, 1]
    cores = len(os.sched_getaffinity(0))
    assert probe("free") == [cores, cores]  # the control: without pinning, all cores


def test_decayed_load_matches_the_kernel_recurrence():
    """The kernel updates the 1-minute average every 5 s: ``a <- a e + n (1 - e)`` with
    ``e = exp(-5/60)``; the closed form must agree at every update (float64)."""
    e = math.exp(-5.0 / 60.0)
    for start, busy in ((0.0, 1.0), (3.0, 0.0), (1.5, 2.0)):
        a = start
        for k in range(1, 40):
            a = a * e + busy * (1 - e)
            assert R.decayed_load(start, 5.0 * k, busy) == pytest.approx(a, rel=1e-12, abs=1e-15)
    assert R.decayed_load(2.0, -1.0) == 2.0  # no decay backwards


def test_own_load_is_recorded_by_thread_scopes_and_decays(monkeypatch):
    t0 = time.monotonic()
    monkeypatch.setattr(R, "_own_load", [0.0, t0])
    R._record_own_load(t0, t0 + 60.0, cpu_s=120.0)  # two busy threads for a minute
    assert R.own_recent_load(t0 + 60.0) == pytest.approx(2 * (1 - math.exp(-1)), rel=1e-12)
    assert R.own_recent_load(t0 + 120.0) == pytest.approx(2 * (1 - math.exp(-1)) * math.exp(-1))
    # a real scope: CPU time spent inside counts as this process's own load afterwards
    monkeypatch.setattr(R, "_own_load", [0.0, time.monotonic()])
    x = torch.randn(256, 256)
    with R.num_threads(1):
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            x = (x @ x).tanh()
    assert R.own_recent_load() > 0.001


def test_busy_cores_elsewhere_sees_a_busy_process(monkeypatch):
    """A competitor started half a second ago is seen by the runnable count (the load
    average, set to 0 here, would not see it yet)."""
    cores = R.usable_cores()
    share = min(1.0, cores / (os.cpu_count() or cores))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert R.busy_cores_elsewhere(cores) >= 0.99 * share
    finally:
        spin.kill()
        spin.wait()


def test_busy_cores_elsewhere_uses_the_load_average_less_own_load(monkeypatch):
    cores = R.usable_cores()
    share = min(1.0, cores / (os.cpu_count() or cores))
    monkeypatch.setattr(R, "_runnable_now", lambda: 0)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    monkeypatch.setattr(R, "_own_load", [0.0, time.monotonic()])
    assert R.busy_cores_elsewhere(cores) == pytest.approx(3.0 * share)
    monkeypatch.setattr(R, "_own_load", [1.0, time.monotonic()])
    assert R.busy_cores_elsewhere(cores) == pytest.approx(2.0 * share, rel=1e-3)
    monkeypatch.setattr(R, "_own_load", [5.0, time.monotonic()])
    assert R.busy_cores_elsewhere(cores) == 0.0  # never negative


# ---------------------------------------------------------------------------------------------
# applying a count


def test_apply_num_threads_returns_the_previous_count_and_the_scope_restores_it():
    assert torch.get_num_threads() == 1  # tests/conftest.py
    assert R.apply_num_threads(2) == 1 and torch.get_num_threads() == 2
    assert R.apply_num_threads(1) == 2
    with R.num_threads(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with pytest.raises(KeyError), R.num_threads(2):
        raise KeyError("boom")
    assert torch.get_num_threads() == 1


def test_apply_process_threads_exports_an_explicit_request_only(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(R.ENV_VAR, raising=False)
    assert R.apply_process_threads(None) is None
    assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == 1
    monkeypatch.setenv(R.ENV_VAR, "2")
    assert R.apply_process_threads(None) == 2
    assert os.environ["OMP_NUM_THREADS"] == "2" and torch.get_num_threads() == 2
    assert R.apply_process_threads(1) == 1 and os.environ["OMP_NUM_THREADS"] == "1"


# ---------------------------------------------------------------------------------------------
# device


def test_resolve_device():
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert R.resolve_device("auto").type == auto and R.resolve_device(None).type == auto
    assert R.resolve_device("cpu") == torch.device("cpu")
    assert R.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("tpu", "cuda:x", "", "CPU", "cuda:"):
        with pytest.raises(ValueError) as exc:
            R.resolve_device(bad)
        assert _one_line(exc).startswith("--device must be auto, cpu, cuda or cuda:N")
    if torch.cuda.is_available():
        assert R.resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ValueError, match="CUDA device"):
            R.resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        for name in ("cuda", "cuda:0"):
            with pytest.raises(ValueError) as exc:
                R.resolve_device(name)
            assert _one_line(exc).startswith(f"--device {name}: CUDA is not available")


# ---------------------------------------------------------------------------------------------
# Python API


def _blobs(shape=(24, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    src = torch.exp(-sum(a**2 for a in axes) / 0.2)
    tgt = torch.exp(-sum((a - 0.1) ** 2 for a in axes) / 0.2)
    return src, tgt


FAST = {"iterations": [2], "scales": [1.0], "affine": False, "solver": {"num_steps": 3}}


def test_api_register_threads_and_device(monkeypatch):
    from rdmm_lightning.pipeline import outputs

    monkeypatch.delenv(R.ENV_VAR, raising=False)
    seen = []  # thread counts while the output maps are computed

    def jacobian(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_jacobian(*args, **kwargs)

    real_jacobian = outputs.jacobian_determinant
    monkeypatch.setattr(outputs, "jacobian_determinant", jacobian)
    src, tgt = _blobs()
    res = rl.register(src, tgt, "svf", threads=2, device="auto", **FAST)
    assert res.extras["metrics"]["runtime"]["threads"] == 2  # read from torch during the run
    assert seen == [2]  # the outputs are computed with the same count
    assert res.extras["config"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch.get_num_threads() == 1  # restored
    # automatic on a 24x24 grid: one thread although the caller runs two
    torch.set_num_threads(2)
    res = rl.register(src, tgt, "svf", **FAST)
    assert res.extras["metrics"]["runtime"]["threads"] == 1 and torch.get_num_threads() == 2
    # RDMM_NUM_THREADS overrides the automatic choice; the argument overrides the variable
    monkeypatch.setenv(R.ENV_VAR, "2")
    torch.set_num_threads(1)
    assert rl.register(src, tgt, "svf", **FAST).extras["metrics"]["runtime"]["threads"] == 2
    batch = rl.register(
        torch.stack([src, src])[:, None], torch.stack([tgt, tgt])[:, None], "svf", threads=1, **FAST
    )
    assert batch.extras["metrics"]["runtime"]["threads"] == 1
    with pytest.raises(ValueError, match="option 'threads' must be an integer >= 1"):
        rl.register(src, tgt, "svf", threads=0, **FAST)
    monkeypatch.setenv(R.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="RDMM_NUM_THREADS must be an integer"):
        rl.register(src, tgt, "svf", **FAST)
    monkeypatch.delenv(R.ENV_VAR)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            rl.register(src, tgt, "svf", device="cuda", **FAST)
