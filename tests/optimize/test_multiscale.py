"""Scale plans, per-scale solver steps, pre-weight parametrisation and similarity selection."""

import pytest
import torch

from rdmm_lightning.ops.grid import domain_spacing
from rdmm_lightning.ops.pre_weights import pre_weights_from_raw, raw_from_pre_weights
from rdmm_lightning.optimize.deformable import _solver_at
from rdmm_lightning.optimize.multiscale import make_scales, per_scale, upsample_field
from rdmm_lightning.optimize.preweights import global_pre_weights, renormalize
from rdmm_lightning.optimize.similarity import build_similarity
from rdmm_lightning.shooting import SolverOptions


def test_plan_shapes_and_spacings():
    shape = (200, 200)
    plan = make_scales(shape, domain_spacing(shape), (0.25, 0.5, 1.0), (60, 40, 20), 0.5)
    assert [lv.shape for lv in plan] == [(50, 50), (100, 100), (200, 200)]
    # the coarsest scale keeps its image grid for the parameters, later ones halve it
    assert [lv.param_shape for lv in plan] == [(50, 50), (50, 50), (100, 100)]
    assert plan[0].spacing == pytest.approx((1 / 49, 1 / 49))
    assert plan[2].param_spacing == pytest.approx((1 / 99, 1 / 99))
    assert [lv.iterations for lv in plan] == [60, 40, 20]
    single = make_scales(shape, domain_spacing(shape), (1.0,), 5, 0.5)
    assert single[0].param_shape == (100, 100)


def test_plan_keeps_physical_spacing_ratios():
    shape = (120, 120, 90)
    sp = domain_spacing(shape, "physical", (2.0, 2.0, 2.0))
    plan = make_scales(shape, sp, (0.5, 1.0), 3, 0.5)
    lv = plan[0]
    assert lv.shape == (60, 60, 45)
    assert lv.spacing[0] * (lv.shape[0] - 1) == pytest.approx(sp[0] * 119)
    assert lv.spacing[2] * (lv.shape[2] - 1) == pytest.approx(sp[2] * 89)


def test_per_scale_and_solver_steps():
    assert per_scale(5, (0.5, 1.0), "iterations") == (5, 5)
    with pytest.raises(ValueError, match="one per scale"):
        per_scale((1, 2, 3), (0.5, 1.0), "iterations")
    shape = (200, 200)
    plan = make_scales(shape, domain_spacing(shape), (0.25, 0.5, 1.0), 1, 0.5)
    rk4 = SolverOptions("rk4", 10)
    assert [_solver_at(rk4, lv, plan[-1]).num_steps for lv in plan] == [5, 5, 10]
    assert _solver_at(SolverOptions("rk4", 3), plan[0], plan[-1]).num_steps == 3
    dopri = SolverOptions("dopri5")
    assert _solver_at(dopri, plan[0], plan[-1]) is dopri


def test_upsample_field_is_identity_on_same_shape():
    x = torch.rand(1, 2, 5, 6)
    assert upsample_field(x, (5, 6)) is x
    up = upsample_field(torch.ones(1, 1, 4, 4), (7, 7))
    assert torch.allclose(up, torch.ones(1, 1, 7, 7))


def test_pre_weight_parametrisation_round_trip():
    g = torch.Generator().manual_seed(0)
    h = renormalize(torch.rand(2, 4, 5, 5, generator=g) + 0.01)
    back = pre_weights_from_raw(raw_from_pre_weights(h))
    assert torch.allclose(back, h, atol=1e-5)
    x = torch.randn(2, 4, 5, 5, generator=g) * 5
    hx = pre_weights_from_raw(x)
    assert bool((hx >= 0).all())
    assert torch.allclose(hx.pow(2).sum(1), torch.ones(2, 5, 5), atol=1e-5)
    flat = renormalize(torch.zeros(1, 4, 2, 2))
    assert torch.allclose(flat, torch.full_like(flat, 0.5))
    gh = global_pre_weights((0.1, 0.3, 0.3, 0.3), 1, (3, 3), torch.zeros(1))
    assert torch.allclose(gh[0, :, 1, 1].pow(2), torch.tensor([0.1, 0.3, 0.3, 0.3]), atol=1e-6)
    with pytest.raises(ValueError, match="initial_h2"):
        global_pre_weights((0.0, 0.0), 1, (3, 3), torch.zeros(1))


def test_build_similarity():
    a, b = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    sim = build_similarity("LNCC", {"window": 3}, {"lncc": {"window": 9, "kernel": "gaussian"}})
    mask = torch.ones(1, 1, 12, 12)
    assert torch.allclose(sim(a, b, None), sim(a, b, mask))
    assert float(sim(a, a, None)) == pytest.approx(0.0, abs=1e-3)
    calls = []
    custom = build_similarity(lambda w, t, mask=None: calls.append(mask) or (w - t).abs().mean())
    custom(a, b, None)
    custom(a, b, mask)
    assert calls[0] is None and calls[1] is mask
    with pytest.raises(ValueError, match="only to a similarity given by name"):
        build_similarity(lambda w, t: w.sum(), {"window": 3})
