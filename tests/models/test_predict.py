"""``predict``: RegistrationResult contents, any input size, instance optimisation."""

import pytest
import torch

from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.ops.warp import compose_maps
from rdmm_lightning.result import RegistrationResult

from .helpers import batch_of, make_module


@pytest.mark.parametrize("model", ["svf", "lddmm", "rdmm"])
def test_predict_result(model):
    torch.manual_seed(0)
    module = make_module(model, (16, 16))
    batch = batch_of((20, 18), batch=2)  # not the training grid: any size works
    res = module.predict(batch["source"], batch["target"], num_steps=2)
    assert isinstance(res, RegistrationResult) and res.model == model
    assert res.phi_inv.shape == res.phi.shape == (2, 2, 20, 18)
    assert res.warped.shape == (2, 1, 20, 18)
    assert res.spacing == domain_spacing((20, 18))
    assert res.extras["num_steps"] == 2 and res.affine is None
    assert (res.sigma_t0 is not None) == (res.sigma_t1 is not None) == (model == "rdmm")
    assert module.training  # predict restores the mode


def test_predict_with_affine_stage_gives_consistent_forward_map():
    torch.manual_seed(0)
    shape = (24, 24)
    module = make_module("lddmm", shape, affine_net={"features": [4, 8], "hidden": 8})
    with torch.no_grad():  # a non-trivial affine: rotation + shift
        bias = module.affine_net.head[-1].bias
        bias.copy_(torch.tensor([0.0, -0.1, 0.1, 0.0, 0.03, -0.02]))
        torch.nn.init.normal_(module.net.momentum_net.unet.out.weight, std=0.1)
    batch = batch_of(shape)
    res = module.predict(batch["source"], batch["target"], num_steps=2)
    sp = res.spacing
    ident = identity_map(shape, sp)
    err = compose_maps(res.phi_inv, res.phi, sp) - ident
    inner = (slice(None), slice(None), slice(5, -5), slice(5, -5))
    assert res.affine.shape == (1, 2, 3)
    assert float((res.phi_inv - ident).abs().max()) > 0.02
    assert float(err[inner].abs().max()) < 5e-3


def test_predict_rejects_wrong_inputs():
    module = make_module("svf", (16, 16))
    with pytest.raises(ValueError, match="2 spatial dims"):
        module.predict(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        module.predict(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 12))


@pytest.mark.parametrize(("model", "optimizer"), [("rdmm", "lbfgs"), ("svf", "adam")])
def test_refinement_lowers_the_loss(model, optimizer):
    torch.manual_seed(0)
    module = make_module(model, (16, 16), similarity="ssd", refine_optimizer=optimizer,
                         refine_lr=0.05 if optimizer == "adam" else None)  # fmt: skip
    batch = batch_of((16, 16), shift=2)
    src, tgt = batch["source"], batch["target"]
    plain = module.predict(src, tgt)
    refined = module.predict(src, tgt, refine_steps=10)
    losses = [h["loss"] for h in refined.history]
    assert refined.extras["refine_steps"] == 10 and len(losses) >= 10
    assert min(losses) < 0.8 * losses[0]
    sim_before = float(module.similarity(plain.warped, tgt))
    sim_after = float(module.similarity(refined.warped, tgt))
    assert sim_after < sim_before
    assert refined.phi is not None and refined.phi.shape == plain.phi.shape
    if model == "rdmm":
        h0 = refined.extras["h0"]
        assert float(h0.min()) >= 0 and torch.allclose(h0.pow(2).sum(1), torch.ones(()), atol=1e-5)
