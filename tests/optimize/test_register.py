"""register_tensors: affine-opt then a deformable model in one call."""

from collections import Counter

import pytest
import torch

from rdmm_lightning.losses import lncc_loss
from rdmm_lightning.ops.affine import affine_to_map
from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.warp import warp_image
from rdmm_lightning.optimize import Deadline, register_tensors
from rdmm_lightning.shooting import SolverOptions

from .clocks import TickingClock
from .images import deformed_pair, known_affine

FAST = dict(
    sigmas=(0.08, 0.12, 0.16),
    scales=(0.5, 1.0),
    iterations=(8, 6),
    similarity_kwargs={"window": 5},
    solver=SolverOptions("rk4", 5),
)


def _pair():
    shape = (32, 32)
    sp = domain_spacing(shape)
    src, tgt = deformed_pair(shape, amplitude=0.03)
    mat = known_affine(2, angle_deg=8.0, scale=1.05, shift=(0.06, -0.04))
    return src, warp_image(tgt, affine_to_map(mat, shape, sp), sp), mat


def test_affine_then_lddmm():
    src, tgt, mat = _pair()
    aff_only = register_tensors(src, tgt, "affine", affine_kwargs={"iterations": (20, 15, 10)})
    assert aff_only.model == "affine"
    res = register_tensors(src, tgt, "lddmm", affine_kwargs={"iterations": (20, 15, 10)}, **FAST)
    assert res.model == "lddmm" and res.stopped is None
    assert torch.allclose(res.affine, aff_only.affine)
    assert res.extras["affine_time_s"] > 0 and res.time_s >= res.extras["affine_time_s"]
    stages = {h["stage"] for h in res.history}
    assert stages == {"affine", "lddmm"}
    before = lncc_loss(aff_only.warped, tgt, window=5)
    assert lncc_loss(res.warped, tgt, window=5) < before
    assert res.phi is not None


def test_without_affine_and_errors():
    src, tgt, _ = _pair()
    res = register_tensors(src, tgt, "svf", affine=False, **FAST)
    assert res.affine is None
    with pytest.raises(ValueError, match="model must be one of"):
        register_tensors(src, tgt, "bspline")
    with pytest.raises(ValueError, match="cannot be combined"):
        register_tensors(src, tgt, "svf", initial_map=res.phi_inv)
    with pytest.raises(ValueError, match="takes no deformable arguments"):
        register_tensors(src, tgt, "affine", sigmas=(0.1,))


def test_time_limit_covers_both_stages():
    """``max_time`` bounds the whole call, the affine stage included. On a clock that advances
    1 s at every reading a 1 ms limit is over at the first check, far before the work asked
    for (1000 affine iterations per scale, then 50 rdmm iterations per scale): the affine
    stage stops on the clock and the rdmm stage before its first iteration, so the result is
    the affine one, labelled so, never an rdmm result that did nothing."""
    src, tgt, _ = _pair()
    res = register_tensors(
        src,
        tgt,
        "rdmm",
        max_time=Deadline(1e-3, clock=TickingClock(1.0)),
        affine_kwargs={"iterations": 1000},
        **{**FAST, "iterations": (50, 50)},
    )
    assert res.stopped is not None
    assert "time limit of 0.001 s reached at affine scale" in res.stopped
    assert "time limit of 0.001 s reached at rdmm scale" in res.stopped
    assert "the rdmm stage ran 0 iterations" in res.stopped
    assert res.model == "affine" and res.extras["requested_model"] == "rdmm"
    assert res.sigma_t0 is None and res.affine is not None
    assert torch.isfinite(res.phi_inv).all() and torch.isfinite(res.warped).all()
    # work done: fewer than 10 iterations per stage (one evaluation takes well over 0.1 ms)
    done = Counter(h["stage"] for h in res.history)
    assert done["affine"] < 10 and done["rdmm"] < 10
    stages = res.extras["stages"]
    assert [(r["stage"], r["scale"]) for r in stages] == [
        ("affine", 0.25), ("affine", 0.5), ("affine", 1.0), ("rdmm", 0.5), ("rdmm", 1.0)
    ]  # fmt: skip
    assert [r["planned"] for r in stages] == [1000, 1000, 1000, 50, 50]
    assert stages[0]["stopped"] == "time limit" and stages[3]["stopped"] == "time limit"
    assert {r["stopped"] for r in stages[1:3] + stages[4:]} == {"not run"}
    assert sum(r["iterations"] for r in stages if r["stage"] == "rdmm") == 0
