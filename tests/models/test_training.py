"""Training through ``pytorch_lightning.Trainer`` on tiny synthetic pairs."""

import pytest
import torch

from .helpers import batch_of, loader, make_module, trainer

MODELS = ["affine", "svf", "lddmm", "rdmm"]
SHAPES = {2: (32, 32), 3: (16, 16, 16)}


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run(tmp_path, model, dim):
    torch.manual_seed(0)
    shape = SHAPES[dim]
    kw = {"bidirectional": True} if model == "affine" else {"symmetry_weight": 1.0}
    module = make_module(model, shape, **kw)
    tr = trainer(tmp_path, fast_dev_run=True)
    tr.fit(module, loader(shape), loader(shape))
    metrics = tr.callback_metrics
    for key in ("train/loss", "val/loss", "val/similarity", "val/dice", "val/symmetry"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert float(metrics["val/negative_jacobian_fraction"]) == 0.0
    if model == "rdmm":
        assert "val/omt" in metrics
    tr.test(module, loader(shape), verbose=False)
    assert "test/dice" in tr.callback_metrics


@pytest.mark.parametrize("model", ["svf", "rdmm", "affine", "rdmm-bfloat16"])
def test_training_lowers_the_loss_on_a_fixed_pair(tmp_path, model):
    torch.manual_seed(0)
    shape = (32, 32)
    kw = {"lr": 3e-3, "log_figures": False}
    if model.endswith("-bfloat16"):
        model, kw["network_precision"] = model.split("-")[0], "bfloat16"
    if model != "affine":
        kw["energy_weight"] = 0.1
    module = make_module(model, shape, similarity="ssd", **kw)
    batch = batch_of(shape, shift=3)
    tr = trainer(tmp_path, max_steps=25, limit_val_batches=0, log_every_n_steps=1)
    before = _loss_outside(module, batch)
    tr.fit(module, loader(shape, n=1, batch_size=1, shift=3))
    after = _loss_outside(module, batch)
    assert after < 0.8 * before, (before, after)


def _loss_outside(module, batch) -> float:
    """The validation loss computed outside a trainer (objective only, no logging)."""
    with torch.no_grad():
        src, tgt = batch["source"], batch["target"]
        spacing = module.batch_spacing(batch, src.shape[2:])
        if hasattr(module, "objective"):
            out, _ = module(src, tgt, spacing)
            return float(module.objective(out.warped, tgt, out.steps, out.low_spacing)["loss"])
        res = module.predict(src, tgt)
        return float(module.similarity(res.warped, tgt))


@pytest.mark.parametrize("trainable", [False, True])
def test_affine_stage_frozen_or_fine_tuned(tmp_path, trainable):
    torch.manual_seed(0)
    shape = (16, 16)
    config = {"features": [4, 8], "hidden": 8, "num_steps": 2}
    module = make_module(
        "svf", shape, affine_net=config, affine_trainable=trainable, lr=1e-2, log_figures=False
    )
    before = {k: v.clone() for k, v in module.affine_net.state_dict().items()}
    tr = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    tr.fit(module, loader(shape, n=1, batch_size=1, shift=3))
    changed = any(not torch.equal(before[k], v) for k, v in module.affine_net.state_dict().items())
    assert changed == trainable
    optimised = {id(p) for g in tr.optimizers[0].param_groups for p in g["params"]}
    assert all((id(p) in optimised) == trainable for p in module.affine_net.parameters())


def test_physical_spacing_mode_uses_the_batch_spacing(tmp_path):
    from rdmm_lightning.ops.grid import domain_spacing

    module = make_module("rdmm", (16, 12), spacing_mode="physical")
    batch = {"spacing": torch.tensor([[1.0, 2.0]])}
    expected = domain_spacing((16, 12), "physical", (1.0, 2.0))
    assert module.batch_spacing(batch, (16, 12)) == expected
    tr = trainer(tmp_path, fast_dev_run=True)
    tr.fit(module, loader((16, 12)), loader((16, 12)))
    assert torch.isfinite(tr.callback_metrics["val/loss"])


def test_label_max_classes_is_checked_when_the_module_is_built():
    with pytest.raises(ValueError, match="label_max_classes must be a positive integer"):
        make_module("rdmm", (16, 16), label_max_classes=0)
    assert make_module("rdmm", (16, 16), label_max_classes=3).hparams.label_max_classes == 3


def test_image_shape_required_and_checked():
    from rdmm_lightning.models import AffineNetModule, RegistrationNetModule

    with pytest.raises(ValueError, match="image_shape .* is required"):
        RegistrationNetModule("svf")
    with pytest.raises(ValueError, match="each >= 8"):
        AffineNetModule(image_shape=(4, 16))
    with pytest.raises(ValueError, match="spacing_mode"):
        RegistrationNetModule("svf", image_shape=(16, 16), spacing_mode="mm")
    with pytest.raises(ValueError, match="model must be one of"):
        RegistrationNetModule("bspline", image_shape=(16, 16))


def test_weight_range_term_pulls_pre_weights_to_the_prior():
    """With weight_range_weight > 0 the RDMM objective has the weight-range term: ~0 for the
    untrained net (which outputs the prior), positive once the pre-weights leave the prior, and
    its gradient reaches the pre-weight net."""
    torch.manual_seed(0)
    shape = (32, 32)
    module = make_module("rdmm", shape, weight_range_weight=10.0, log_figures=False)
    batch = batch_of(shape, shift=3)
    src, tgt = batch["source"], batch["target"]
    spacing = module.batch_spacing(batch, src.shape[2:])
    out, _ = module(src, tgt, spacing)
    terms = module.objective(out.warped, tgt, out.steps, out.low_spacing)
    assert 0 <= float(terms["weight_range"]) < 1e-3
    with torch.no_grad():  # push the last layer of the pre-weight net off the prior
        for p in module.net.pre_weight_net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    out, _ = module(src, tgt, spacing)
    terms = module.objective(out.warped, tgt, out.steps, out.low_spacing)
    assert float(terms["weight_range"]) > 1e-3
    terms["loss"].backward()
    grads = [p.grad for p in module.net.pre_weight_net.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)
    module.weight_range_weight = 0.0
    assert "weight_range" not in module.objective(out.warped, tgt, out.steps, out.low_spacing)


def test_label_term_is_added_with_labels_and_reaches_the_momentum_net():
    """label_weight > 0 adds the warped-label Dice loss on batches with labels (both directions
    when bidirectional); its gradient reaches the momentum net; without labels or with weight 0
    there is no label term."""
    torch.manual_seed(0)
    shape = (32, 32)
    module = make_module("lddmm", shape, label_weight=2.0, log_figures=False)
    logged: dict[str, float] = {}
    module.log_value = lambda stage, name, value, b: logged.__setitem__(name, float(value))
    batch = batch_of(shape, batch=2, shift=3)
    loss = module._step(batch, "train", 0)
    assert 0.3 < logged["label"] <= 1.0  # boxes 3 voxels apart, near-identity map
    without = logged["loss"] - 2.0 * logged["label"]
    assert without == pytest.approx(logged["similarity"] + logged["energy"], rel=1e-4, abs=1e-6)
    module.zero_grad()
    loss.backward()
    grads = [p.grad for p in module.net.momentum_net.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)
    module.bidirectional = True
    logged.clear()
    module._step(batch, "train", 0)
    assert "label" in logged and "symmetry" in logged
    module.bidirectional = False
    for weight, data in ((0.0, batch), (2.0, batch_of(shape, batch=2, shift=3, labels=False))):
        module.label_weight = weight
        logged.clear()
        module._step(data, "train", 0)
        assert "label" not in logged
    with pytest.raises(ValueError, match="label_stride"):
        make_module("lddmm", shape, label_stride=0)


def test_non_finite_gradients_skip_the_update(tmp_path):
    """A step whose loss (so every gradient) is NaN leaves the parameters and Adam's moments as
    they were (without the guard Adam writes NaN into every parameter); the finite steps still
    update, and the skip is counted."""
    from rdmm_lightning.models import RegistrationNetModule

    class DivergesOnce(RegistrationNetModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if batch_idx == 1 else loss

    torch.manual_seed(0)
    shape = (16, 16)
    module = DivergesOnce(
        "svf", image_shape=shape, features=(4, 4), similarity="ssd", lr=1e-2, log_figures=False
    )
    before = [p.detach().clone() for p in module.parameters()]
    tr = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    tr.fit(module, loader(shape, n=3, batch_size=1))
    params = list(module.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert module.skipped_steps == 1
    assert any(not torch.equal(p, b) for p, b in zip(params, before))


def _nan_on(steps):
    """An svf-net module whose loss is NaN on the given batch indices of every epoch."""
    from rdmm_lightning.models import RegistrationNetModule

    class NanOn(RegistrationNetModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if batch_idx in steps else loss

    torch.manual_seed(0)
    return NanOn("svf", image_shape=(16, 16), features=(4, 4), similarity="ssd", log_figures=False)


def test_a_run_of_non_finite_updates_stops_the_training(tmp_path, monkeypatch):
    """Weights that give no finite loss any more stop the run with one line that names the
    step they date from; skips that alternate with finite updates (the control) never do."""
    from rdmm_lightning.models import RegistrationModuleBase, TrainingDivergedError

    monkeypatch.setattr(RegistrationModuleBase, "max_consecutive_skipped_steps", 3)
    module = _nan_on({2, 3, 4, 5})
    with pytest.raises(TrainingDivergedError, match=r"last 3 updates \(from step 2\)") as info:
        trainer(tmp_path / "a", max_steps=8, limit_val_batches=0).fit(
            module, loader((16, 16), n=8, batch_size=1)
        )
    assert "\n" not in str(info.value)
    assert module.skipped_steps == 3
    alternating = _nan_on({1, 2, 4, 5, 7})  # runs of 2 < 3
    trainer(tmp_path / "b", max_steps=8, limit_val_batches=0).fit(
        alternating, loader((16, 16), n=8, batch_size=1)
    )
    assert alternating.skipped_steps == 5 and alternating.global_step == 8


def test_non_finite_network_outputs_give_a_nan_loss_on_every_parameter():
    """Network outputs that are not finite (the shooting refuses them) give a NaN loss reaching
    every trainable parameter, not ``None``: its backward pass joins DDP's all-reduce like any
    other, and the NaN gradients make the optimizer hook drop the update and count it."""
    batch = batch_of((24, 24), shift=3)
    module = make_module("rdmm", (24, 24), log_figures=False)
    with torch.no_grad():
        module.net.momentum_net.unet.out.weight.fill_(float("nan"))
    loss = module.training_step(batch, 0)
    assert loss is not None and not bool(torch.isfinite(loss))
    loss.backward()
    params = module.trainable_parameters()
    assert params and all(p.grad is not None for p in params)
    assert all(not bool(torch.isfinite(p.grad).all()) for p in params)
    module.on_before_optimizer_step(None)
    assert all(p.grad is None for p in params) and module.skipped_steps == 1


@pytest.mark.parametrize("model", ["lddmm", "rdmm"])
def test_solver_without_checkpointing_gives_the_same_loss_and_gradients(model):
    """``solver_checkpoint=False`` (the graph of every step kept, faster on small grids) is the
    same computation as the recomputing backward."""
    modules = [
        make_module(model, (24, 24), solver_checkpoint=checkpoint, log_figures=False)
        for checkpoint in (True, False)
    ]
    assert [m.net.unit.solver.checkpoint for m in modules] == [True, False]
    _assert_same_step(*modules)


def _assert_same_step(module_a, module_b) -> None:
    """Both modules (built alike but for solver options) give the same loss and parameter
    gradients on one training step from the same non-trivial weights."""
    batch = batch_of((24, 24), shift=3)
    results = []
    for module in (module_a, module_b):
        torch.manual_seed(0)
        with torch.no_grad():  # a non-trivial prediction, the same in both
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * 0.05 if p.dim() > 1 else torch.zeros_like(p))
        loss = module.training_step(batch, 0)
        loss.backward()
        grads = [p.grad.clone() for p in module.net.parameters() if p.grad is not None]
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-7)


def test_compiled_shooting_gives_the_same_loss_and_gradients():
    """``solver_compile=True`` (the shooting right-hand side through torch.compile) trains the
    same function: equal loss and parameter gradients on one rdmm-net step."""
    modules = [
        make_module(
            "rdmm", (24, 24), solver_checkpoint=False, solver_compile=compile, log_figures=False
        )
        for compile in (False, True)
    ]
    assert [m.net.unit.solver.compile for m in modules] == [False, True]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    _assert_same_step(*modules)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile


def _fast_rdmm_module(std: float, **kw):
    """A K=2 rdmm module with 2 solver steps whose momentum head predicts large momenta."""
    torch.manual_seed(0)
    module = make_module("rdmm", (24, 24), num_steps=2, solver_steps=2, log_figures=False, **kw)
    with torch.no_grad():
        module.net.momentum_net.unet.out.weight.normal_(std=std)
    return module


def test_the_courant_limit_keeps_a_fast_first_step_finite():
    """Large predicted momenta (the velocity grows during the shot) overflow the 2-step solver;
    the module's Courant limit (default ``solver_max_cfl``) takes more steps instead."""
    batch = batch_of((24, 24), shift=3)
    module = _fast_rdmm_module(1.0)
    assert module.net.unit.solver.max_cfl == 2.0
    assert bool(torch.isfinite(module.training_step(batch, 0)))
    unlimited = _fast_rdmm_module(1.0, solver_max_cfl=None)
    assert unlimited.net.unit.solver.max_cfl is None
    assert not bool(torch.isfinite(unlimited.training_step(batch, 0)))


def test_a_diverged_first_step_gives_a_non_finite_loss_not_an_error():
    """Beyond the Courant limit's step cap the first step's map is not finite: the K=2 loop
    stops there (the loss is not finite, so training skips the update) instead of raising on
    the NaN momentum the network would predict from the NaN-warped image."""
    batch = batch_of((24, 24), shift=3)
    module = _fast_rdmm_module(5.0)
    loss = module.training_step(batch, 0)
    assert not bool(torch.isfinite(loss))


def test_optimizer_is_fused_adam_with_the_same_update():
    """configure_optimizers takes Adam's fused kernel on the CPU (torch >= 2.4) and its update
    equals the default implementation's (float64, two steps, weight decay and a skipped
    parameter without gradient included)."""
    from rdmm_lightning.models.base import adam

    torch.manual_seed(0)
    shape = (16, 16)
    module = make_module("svf", shape)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    torch_version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    assert opt.defaults["fused"] is (True if torch_version >= (2, 4) else None)
    params = [torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64)) for _ in range(3)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    start = [p.detach().clone() for p in params]
    fused = adam(params, lr=1e-2, weight_decay=0.1)
    plain = torch.optim.Adam(twins, lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        for p, q in zip(params[:2], twins[:2]):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert not torch.equal(params[0], start[0]) and torch.equal(params[2], start[2])
