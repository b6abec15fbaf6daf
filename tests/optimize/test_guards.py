"""Time limit, non-finite losses and input validation of the optimisers."""

import io
import math

import pytest
import torch

from rdmm_lightning.losses import lncc_loss
from rdmm_lightning.optimize import (
    Deadline,
    ProgressLine,
    StopOptimization,
    optimize_affine,
    optimize_deformable,
)
from rdmm_lightning.optimize.lbfgs import run_lbfgs
from rdmm_lightning.shooting import SolverOptions

from .clocks import TickingClock
from .images import affine_pair, deformed_pair

FAST = dict(
    sigmas=(0.08, 0.12, 0.16),
    scales=(0.5, 1.0),
    iterations=(8, 6),
    similarity_kwargs={"window": 5},
    solver=SolverOptions("rk4", 5),
)


class NaNAfter:
    """LNCC that returns NaN from the ``k``-th call on (counting from 1)."""

    def __init__(self, k: int):
        self.k, self.calls = k, 0

    def __call__(self, warped, target, mask=None):
        self.calls += 1
        loss = lncc_loss(warped, target, window=5, mask=mask)
        return loss * float("nan") if self.calls >= self.k else loss


def _finite(res) -> bool:
    maps = [res.phi_inv, res.warped] + ([res.phi] if res.phi is not None else [])
    return all(bool(torch.isfinite(t).all()) for t in maps)


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_non_finite_loss_keeps_last_good_parameters(model):
    src, tgt = deformed_pair((32, 32))
    kwargs = {k: v for k, v in FAST.items() if k != "similarity_kwargs"}
    res = optimize_deformable(src, tgt, model, similarity=NaNAfter(6), **kwargs)
    assert res.stopped is not None and "non-finite loss" in res.stopped
    assert res.stopped.startswith("non-finite loss in similarity at")
    assert f"{model} scale 0.5" in res.stopped
    assert _finite(res)
    good = [h["loss"] for h in res.history]
    assert len(good) >= 2 and all(math.isfinite(v) for v in good)
    # the kept parameters are the best seen: better than the start
    assert lncc_loss(res.warped, tgt, window=5) < lncc_loss(src, tgt, window=5)


def test_non_finite_at_first_evaluation_returns_identity():
    src, tgt = deformed_pair((32, 32))
    kwargs = {k: v for k, v in FAST.items() if k != "similarity_kwargs"}
    res = optimize_deformable(src, tgt, "svf", similarity=NaNAfter(1), **kwargs)
    assert "non-finite" in res.stopped
    assert torch.allclose(res.warped, src, atol=1e-5)


def test_affine_non_finite():
    src, tgt, _ = affine_pair((24, 24))
    res = optimize_affine(src, tgt, similarity=NaNAfter(4))
    assert "non-finite" in res.stopped and _finite(res)
    assert torch.isfinite(res.affine).all()


def test_time_limit_stops_with_last_good_result():
    """A budget of 1 ms on a clock that advances 1 s at every reading: the runs stop on the
    clock within their first scale, with finite maps. Without the limit, or with the clock
    checked only between scales, lddmm runs 60 to 90 iterations at scale 0.5 here and affine
    26 at scale 0.25."""
    src, tgt = deformed_pair((32, 32))
    limit = Deadline(1e-3, clock=TickingClock(1.0))
    res = optimize_deformable(
        src, tgt, "lddmm", max_time=limit, **{**FAST, "iterations": (500, 500)}
    )
    assert res.stopped is not None and res.stopped.startswith("time limit of 0.001 s reached")
    assert "at lddmm scale 0.5" in res.stopped and "kept the last good parameters" in res.stopped
    assert _finite(res)
    assert len(res.history) < 10
    res = optimize_affine(
        src, tgt, max_time=Deadline(1e-3, clock=TickingClock(1.0)), iterations=1000
    )
    assert "time limit of 0.001 s reached at affine scale 0.25" in res.stopped and _finite(res)
    assert len(res.history) < 10


def test_progress_line_written_to_stderr(capsys):
    src, tgt = deformed_pair((16, 16))
    optimize_deformable(src, tgt, "svf", progress=True, **{**FAST, "iterations": 2})
    err = capsys.readouterr().err
    assert "[svf] scale 0.5" in err and "[svf] scale 1" in err
    assert "loss" in err and "similarity" in err and err.endswith("\n")


def test_progress_in_a_log_is_one_line_per_stage():
    stream = io.StringIO()  # not a terminal: the form a log file gets
    line = ProgressLine("[x] scale 1", 3, stream=stream, interval=0.0)
    for it in range(4):
        line.update(it, {"loss": 0.5 - 0.1 * it})
    assert stream.getvalue() == ""  # nothing is redrawn into a log
    line.close("done")
    text = stream.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("[x] scale 1 it 3/3 loss 0.2 [") and text.endswith("s] (done)\n")


def test_progress_on_a_terminal_is_a_bar_with_eta():
    stream = io.StringIO()
    line = ProgressLine("[x]", 4, stream=stream, interval=0.0, terminal=True)
    line.update(1, {"loss": 0.5}, force=True)
    line.update(2, {"loss": 0.25}, force=True)
    line.close("done")
    text = stream.getvalue()
    assert "\r" in text and "[x]" in text and "2/4" in text
    assert "<" in text and ("it/s" in text or "s/it" in text)  # elapsed<remaining, rate
    assert "loss 0.25 (done)" in text


def test_disabled_progress_writes_nothing_and_deadline_units():
    stream = io.StringIO()
    quiet = ProgressLine("[x]", 3, enabled=False, stream=stream, terminal=True)
    quiet.update(1, {"loss": 0.5})
    quiet.close("done")
    assert stream.getvalue() == ""
    assert Deadline(None).remaining() is None
    with pytest.raises(StopOptimization, match="time limit"):
        Deadline(1e-9).check()
    with pytest.raises(ValueError, match="max_time"):
        Deadline(-1)


def test_run_lbfgs_minimises_a_quadratic_and_restores_best():
    x = torch.tensor([3.0, -2.0], requires_grad=True)

    def objective():
        loss = ((x - torch.tensor([1.0, 0.5])) ** 2).sum()
        return loss, {"q": float(loss.detach())}

    out = run_lbfgs([x], objective, 20)
    assert out.stopped is None and out.best_loss < 1e-10
    assert torch.allclose(x.detach(), torch.tensor([1.0, 0.5]), atol=1e-5)
    y = torch.tensor([3.0], requires_grad=True)
    calls = {"n": 0}

    def bad():
        calls["n"] += 1
        loss = (y - 1.0).pow(2).sum() * (float("inf") if calls["n"] > 2 else 1.0)
        return loss, {}

    out = run_lbfgs([y], bad, 20)
    assert "non-finite loss" in out.stopped
    assert float((y.detach() - 1.0) ** 2) == pytest.approx(out.best_loss)
    assert out.best_loss < 4.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="bspline"), "model must be one of"),
        (dict(regularizer="learned"), "regularizer must be one of"),
        (dict(regularizer="predefined"), "needs pre_weights"),
        (dict(model="lddmm", pre_weights=torch.ones(1, 4, 16, 16)), "only to model='rdmm'"),
        (dict(pre_weights=torch.ones(1, 3, 16, 16)), r"pre_weights must have shape \(B, N, \*S\)"),
        (dict(pre_weights=-torch.ones(1, 4, 16, 16)), "non-negative"),
        (dict(scales=(1.0, 0.5)), "sorted coarse to fine"),
        (dict(scales=(0.0, 1.0)), r"numbers in \(0, 1\]"),
        (dict(iterations=(1, 2)), "one per scale"),
        (dict(lowres_factor=0.0), "lowres_factor"),
        (dict(spacing=(0.1,)), "spacing must have 2 positive entries"),
        (dict(initial_map=torch.zeros(1, 2, 8, 8)), "initial_map must have spatial shape"),
        (dict(initial_forward=torch.zeros(1, 2, 16, 16)), "needs initial_map"),
        (dict(mask=torch.ones(1, 2, 16, 16)), "mask must have shape"),
        (dict(similarity="foo"), "unknown similarity"),
        (dict(similarity=3), "similarity must be a name"),
        (dict(energy_weight=-1.0), "energy_weight must be >= 0"),
        (dict(sigmas=(0.1, -0.1)), "sigmas must be"),
        (dict(model="rdmm", kernel_weights=(1.0, 1.0)), "kernel_weights apply to svf/lddmm"),
        (dict(max_time=0), "max_time"),
    ],
)
def test_deformable_bad_inputs(kwargs, match):
    src = torch.rand(1, 1, 16, 16)
    kwargs = dict(kwargs)
    model = kwargs.pop("model", "rdmm")
    kwargs.setdefault("iterations", 1)
    with pytest.raises(ValueError, match=match):
        optimize_deformable(src, src.clone(), model, **kwargs)


@pytest.mark.parametrize(
    "source, target, match",
    [
        (torch.rand(16, 16), torch.rand(16, 16), r"source must have shape \(B, 1, \*S\)"),
        (torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17), "target must have the shape"),
        (torch.rand(1, 1, 4, 16), torch.rand(1, 1, 4, 16), "at least 8 voxels"),
        (torch.ones(1, 1, 16, 16, dtype=torch.long), torch.ones(1, 1, 16, 16), "floating"),
        (torch.full((1, 1, 16, 16), float("nan")), torch.rand(1, 1, 16, 16), "non-finite"),
    ],
)
def test_bad_images(source, target, match):
    with pytest.raises(ValueError, match=match):
        optimize_deformable(source, target, "svf", iterations=1)
    with pytest.raises(ValueError, match=match):
        optimize_affine(source, target, iterations=1)


def test_affine_bad_init():
    src = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="init must be"):
        optimize_affine(src, src, init="moments")
    with pytest.raises(ValueError, match=r"init must have shape \(B, D, D \+ 1\)"):
        optimize_affine(src, src, init=torch.eye(2))


def test_run_lbfgs_keeps_best_feasible_point():
    """Points with x > 0.5 are declared infeasible: the run ends at the best feasible one."""
    x = torch.tensor([0.0], requires_grad=True)

    def objective():
        loss = (x - 2.0).pow(2).sum()
        return loss, {"x": float(x.detach())}

    out = run_lbfgs([x], objective, 10, feasible=lambda t: t["x"] <= 0.5)
    assert out.kept_feasible and float(x.detach()) <= 0.5
    assert out.best_loss == pytest.approx(float((x.detach() - 2.0) ** 2))
    y = torch.tensor([0.0], requires_grad=True)

    def objective_y():
        loss = (y - 2.0).pow(2).sum()
        return loss, {}

    out = run_lbfgs([y], objective_y, 10, feasible=lambda t: False)
    assert not out.kept_feasible and float(y.detach()) == pytest.approx(2.0, abs=1e-4)


def test_run_lbfgs_restarts_after_a_non_finite_trial():
    """The strong-Wolfe line search extrapolates past x = 7, where the loss is NaN (a shooting
    blow-up): L-BFGS restarts from the best point instead of stopping and reaches the minimum
    x = 250^(1/3) ~ 6.30."""
    x = torch.tensor([0.0], requires_grad=True)
    nans = []

    def objective():
        loss = -x.sum() + 0.001 * x.pow(4).sum()
        if float(x.detach()) > 7.0:
            nans.append(float(x.detach()))
            loss = loss * float("nan")
        return loss, {}

    out = run_lbfgs([x], objective, 20)
    assert nans and out.stopped is None
    assert out.history[-1]["restarts"] >= 1
    assert float(x.detach()) == pytest.approx(250 ** (1 / 3), abs=1e-3)
