"""Time limits split across stages and scales: Deadline parts, ScaleBudget, stop reasons.

Every test runs on a fake clock (no test depends on the wall clock): a ManualClock that the
objective advances by a fixed number of seconds per evaluation plays a slow machine.
"""

import pytest
import torch

from rdmm_lightning.losses import lncc_loss
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.optimize import (
    Deadline,
    LbfgsOptions,
    StopOptimization,
    optimize_affine,
    optimize_deformable,
    register_tensors,
)
from rdmm_lightning.optimize.budget import (
    AFFINE_MIN_SHARE,
    STOP_REASONS,
    ScaleBudget,
    split_budget,
)
from rdmm_lightning.optimize.deformable import _costs
from rdmm_lightning.optimize.lbfgs import run_lbfgs
from rdmm_lightning.optimize.multiscale import make_scales
from rdmm_lightning.shooting import SolverOptions

from .clocks import ManualClock
from .images import deformed_pair

FAST = dict(
    sigmas=(0.08, 0.12, 0.16),
    scales=(0.5, 1.0),
    similarity_kwargs={"window": 5},
    solver=SolverOptions("rk4", 5),
)


class ClockedLNCC:
    """LNCC that advances ``clock`` by ``seconds`` at every evaluation (a slow objective)."""

    def __init__(self, clock: ManualClock, seconds: float):
        self.clock, self.seconds = clock, seconds

    def __call__(self, warped, target, mask=None):
        self.clock.advance(self.seconds)
        return lncc_loss(warped, target, window=5, mask=mask)


def test_deadline_parts_and_messages():
    clock = ManualClock()
    limit = Deadline(10.0, clock=clock)
    assert limit.remaining() == 10.0 and not limit.expired()
    usable = limit.less(2.0)
    share = usable.share(3.0)
    assert usable.remaining() == 8.0 and share.remaining() == 3.0
    assert limit.share(None).remaining() == 10.0 and limit.share(99.0).remaining() == 10.0
    share.check("at x", need=2.5)  # 3 s left: a 2.5 s step may start
    with pytest.raises(StopOptimization) as stop:
        share.check("at x", need=3.5)  # it could not finish: not started
    assert stop.value.kind == "time share" and stop.value.reason == "time share of 3 s used at x"
    clock.advance(7.5)  # the share is long over; 0.5 s of the usable part is left
    with pytest.raises(StopOptimization) as stop:
        share.check("at y")
    assert stop.value.kind == "time share"
    with pytest.raises(StopOptimization) as stop:
        share.check("at y", need=1.0)  # the parent runs out first: named as the time limit
    assert (
        stop.value.kind == "time limit" and stop.value.reason == "time limit of 10 s reached at y"
    )
    assert limit.elapsed() == 7.5 and Deadline.of(limit) is limit
    unlimited = Deadline(None, clock=clock)
    assert unlimited.less(5.0).remaining() is None and unlimited.share(None).remaining() is None
    assert Deadline.of(None).remaining() is None and Deadline.of(2.0).max_time == 2.0


def test_scale_budget_shares_and_reserve():
    clock = ManualClock()
    costs, iterations = [1.0, 4.0, 16.0], [10, 10, 10]
    budget = ScaleBudget(Deadline(42.0, clock=clock), costs, iterations, final=0.5)
    # no rate measured yet: no reserve; scale 0 gets 10 / (10 + 40 + 160) of the 42 s
    assert budget.need(0) == 0.0 and budget.reserve() == 0.0
    assert budget.part(0).remaining() == pytest.approx(2.0)
    clock.advance(2.0)
    budget.record(0, seconds=2.0, evaluations=20)  # 0.1 s per cost unit
    # the final step: half an evaluation at the last scale (16 units) = 0.8 s
    assert budget.need(1) == pytest.approx(0.4) and budget.reserve() == pytest.approx(0.8)
    # scale 1: (40 s left - 0.8 s reserve) * 40 / 200
    assert budget.part(1).remaining() == pytest.approx(39.2 * 40 / 200)
    assert budget.after(1) == 0.0 and budget.after(2) == 0.5
    # the last scale gets all that is left; it keeps the final step back itself (after)
    assert budget.part(2).remaining() == pytest.approx(40.0)
    unlimited = ScaleBudget(Deadline(None), costs, iterations)
    assert unlimited.part(0).remaining() is None and unlimited.part(2).remaining() is None
    assert split_budget(Deadline(10.0, clock=clock), [1.0, 3.0]).remaining() == pytest.approx(2.5)


def _rosenbrock(x: torch.Tensor, clock: ManualClock | None = None):
    """Rosenbrock's valley (L-BFGS needs a few dozen evaluations); each evaluation advances
    ``clock`` by 1 s."""

    def objective():
        if clock is not None:
            clock.advance(1.0)
        loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        return loss, {}

    return objective


def test_run_lbfgs_reasons_and_no_overshoot():
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    out = run_lbfgs([x], _rosenbrock(x), 500)
    assert out.reason == "converged" and out.evaluations > 10 and out.stopped is None
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    out = run_lbfgs([x], _rosenbrock(x), 2)  # at most 3 evaluations for 2 iterations
    assert out.reason == "evaluations" and out.evaluations == 3 and out.stopped is None
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    out = run_lbfgs([x], _rosenbrock(x), 2, options=LbfgsOptions(max_eval_factor=10))
    assert out.reason == "iterations" and out.iterations == 2 and out.stopped is None
    # 1 s per evaluation, 3.5 s budget: the 4th evaluation would end at 4 s, so it never starts
    clock = ManualClock()
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    out = run_lbfgs([x], _rosenbrock(x, clock), 500, deadline=Deadline(3.5, clock=clock))
    assert out.reason == "time limit" and out.evaluations == 3 and clock.now <= 3.5
    assert "time limit of 3.5 s reached" in out.stopped
    # work after the run (after=0.5 evaluations): the 3rd evaluation would leave 0.5 s < 0.5 x 1 s
    clock = ManualClock()
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    limit = Deadline(3.4, clock=clock)
    out = run_lbfgs([x], _rosenbrock(x, clock), 500, deadline=limit, after=0.5)
    assert out.reason == "time limit" and out.evaluations == 2 and limit.remaining() >= 0.5
    # a predicted cost larger than the budget: nothing starts
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    limit = Deadline(0.5, clock=clock)
    out = run_lbfgs([x], _rosenbrock(x, clock), 500, deadline=limit, need=1.0)
    assert out.reason == "time limit" and out.evaluations == 0
    assert set(STOP_REASONS) >= {"converged", "iterations", "time limit", "time share"}


def test_short_budget_reaches_the_finest_scale():
    """1 s per evaluation and a 30 s budget for 2 x 200 planned iterations: every scale gets
    its share, so the finest one runs too (before, the first scale used all of the limit), and
    the run ends within the limit (the next evaluation is not started when it cannot finish)."""
    src, tgt = deformed_pair((32, 32))
    clock = ManualClock()
    res = optimize_deformable(
        src,
        tgt,
        "lddmm",
        similarity=ClockedLNCC(clock, 1.0),
        max_time=Deadline(30.0, clock=clock),
        iterations=(200, 200),
        **{k: v for k, v in FAST.items() if k != "similarity_kwargs"},
    )
    coarse, fine = res.extras["stages"]
    assert (coarse["scale"], fine["scale"]) == (0.5, 1.0)
    assert coarse["planned"] == fine["planned"] == 200
    assert coarse["stopped"] == "time share" and fine["stopped"] == "time limit"
    assert coarse["iterations"] >= 3 and fine["iterations"] >= 3
    assert 0 < coarse["budget_s"] < 30.0 and coarse["evaluations"] <= coarse["budget_s"]
    assert clock.now <= 30.0
    assert res.stopped.startswith(
        "time shares used up at lddmm scale 0.5; time limit of 30 s reached at lddmm scale 1, "
    )
    assert res.model == "lddmm" and torch.isfinite(res.phi_inv).all()


def test_affine_gets_its_share_of_a_registration():
    """The affine stage's part is its planned work's share of both stages' (at least 35%): it
    cannot use up the limit, and the deformable stage still runs at every scale. The fake
    machine takes 0.1 s per affine and 2.5 s per svf evaluation (about the cost model's ratio
    here), 60 s in all: far less than the 900 + 400 iterations planned."""
    src, tgt = deformed_pair((32, 32))
    clock = ManualClock()
    res = register_tensors(
        src,
        tgt,
        "svf",
        max_time=Deadline(60.0, clock=clock),
        affine_kwargs={"iterations": 300, "similarity": ClockedLNCC(clock, 0.1)},
        similarity=ClockedLNCC(clock, 2.5),
        iterations=(200, 200),
        **{k: v for k, v in FAST.items() if k != "similarity_kwargs"},
    )
    stages = res.extras["stages"]
    affine = [r for r in stages if r["stage"] == "affine"]
    svf = [r for r in stages if r["stage"] == "svf"]
    assert len(affine) == 3 and len(svf) == 2
    # the affine part is 35% of 60 s (its planned work alone is 8% of both stages'); here it
    # converges within it (after 5.3 s) and leaves the rest to svf
    assert affine[0]["budget_s"] <= AFFINE_MIN_SHARE * 60 < sum(r["time_s"] for r in svf)
    assert all(r["stopped"] == "converged" for r in affine)
    assert all(r["iterations"] > 0 for r in affine + svf)
    assert svf[0]["stopped"] == "time share" and svf[1]["stopped"] == "time limit"
    assert res.model == "svf" and clock.now <= 60.0


def test_a_scale_too_slow_for_the_time_left_is_not_started():
    """With the rate known (measured by an earlier stage: 10 us per cost unit), a scale whose
    one evaluation and final step cannot fit in the time left is not started: the stage ends at
    the scale before (whose final shoot is cheap) and that scale gets all the time. The fake
    machine runs exactly as the cost model says (scale 1 costs about twice scale 0.5)."""
    src, tgt = deformed_pair((64, 64))
    kwargs = dict(FAST, iterations=(200, 200), lowres_factor=1.0, similarity_kwargs=None)
    plan = make_scales((64, 64), domain_spacing((64, 64)), (0.5, 1.0), (200, 200), 1.0)
    seconds = {lv.shape[-1]: 1e-5 * c for lv, c in zip(plan, _costs("lddmm", plan, FAST["solver"]))}
    clock = ManualClock()

    def modelled(warped, target, mask=None):
        clock.advance(seconds[warped.shape[-1]])
        return lncc_loss(warped, target, window=5, mask=mask)

    # 9 s: one scale-1 evaluation and its final step (1.5 x 6.3 s) do not fit, two at 0.5 do
    limit = Deadline(9.0, clock=clock)
    limit.rate = 1e-5
    res = optimize_deformable(src, tgt, "lddmm", similarity=modelled, max_time=limit, **kwargs)
    coarse, fine = res.extras["stages"]
    assert coarse["evaluations"] == 2 and coarse["stopped"] == "time limit"
    assert coarse["budget_s"] == 9.0  # all of it: scale 1 was out of reach from the start
    assert fine["evaluations"] == 0 and fine["stopped"] == "not run"
    assert res.stopped.startswith("time limit of 9 s reached at lddmm scale 0.5")
    assert clock.now <= 9.0 and torch.isfinite(res.phi_inv).all()
    # the rate says not even the coarsest scale fits: nothing runs, the map is the initial one
    clock.now = 0.0
    limit = Deadline(4.0, clock=clock)
    limit.rate = 1e-5
    res = optimize_deformable(src, tgt, "lddmm", similarity=modelled, max_time=limit, **kwargs)
    assert [r["evaluations"] for r in res.extras["stages"]] == [0, 0] and clock.now == 0.0
    assert [r["stopped"] for r in res.extras["stages"]] == ["time limit", "not run"]
    need = f"{seconds[32]:.3g}"
    assert res.stopped == (
        f"time limit of 4 s: 4 s left, too little for one evaluation at lddmm scale 0.5 "
        f"(about {need} s)"
    )
    assert torch.allclose(res.warped, src, atol=1e-5)


def test_stage_records_without_a_limit():
    src, tgt = deformed_pair((16, 16))
    res = optimize_affine(src, tgt, iterations=(3, 0, 2))
    records = res.extras["stages"]
    assert [r["planned"] for r in records] == [3, 0, 2]
    assert all(r["budget_s"] is None for r in records)
    assert records[1]["stopped"] == "iterations" and records[1]["iterations"] == 0
    assert all(r["stopped"] in ("iterations", "evaluations", "converged") for r in records)
    assert all(r["iterations"] <= r["planned"] for r in records)
