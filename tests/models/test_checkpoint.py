"""Save -> load -> predict, and one-line checkpoint errors."""

import pytest
import torch
from omegaconf import OmegaConf

from rdmm_lightning.models import (
    AffineNetModule,
    CheckpointError,
    RegistrationNetModule,
    load_registration_checkpoint,
)

from .helpers import batch_of, loader, make_module, trainer


def _train_and_save(tmp_path, model: str, shape=(16, 16), name="m.ckpt", **kw):
    torch.manual_seed(0)
    module = make_module(model, shape, lr=1e-2, log_figures=False, **kw)
    tr = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    tr.fit(module, loader(shape, n=2, batch_size=1))
    path = tmp_path / name
    tr.save_checkpoint(path)
    return module, path


def _same_result(a, b) -> None:
    for field in ("phi_inv", "phi", "warped", "affine", "sigma_t0", "sigma_t1"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert torch.equal(x, y), field


@pytest.mark.parametrize("model", ["rdmm", "svf", "affine"])
def test_save_load_predict_identical(tmp_path, model):
    module, path = _train_and_save(tmp_path, model)
    batch = batch_of((16, 16), shift=2)
    src, tgt = batch["source"], batch["target"]
    expected = module.predict(src, tgt)
    cls = AffineNetModule if model == "affine" else RegistrationNetModule
    loaded = cls.load_from_checkpoint(path)  # Lightning alone (weights_only=True by default)
    _same_result(expected, loaded.predict(src, tgt))
    ours = load_registration_checkpoint(path, model)
    _same_result(expected, ours.predict(src, tgt))
    torch.load(path, weights_only=True)  # plain hyper-parameters: safe loading works


def test_network_precision_is_restored_from_the_checkpoint(tmp_path):
    module, path = _train_and_save(tmp_path, "rdmm", network_precision="bfloat16")
    loaded = load_registration_checkpoint(path, "rdmm")
    assert loaded.hparams.network_precision == "bfloat16"
    unets = [loaded.net.momentum_net.unet, loaded.net.pre_weight_net.unet]
    assert [u.precision for u in unets] == ["bfloat16", "bfloat16"]
    batch = batch_of((16, 16), shift=2)
    _same_result(
        module.predict(batch["source"], batch["target"]),
        loaded.predict(batch["source"], batch["target"]),
    )


def test_schedule_state_and_grid_stored(tmp_path):
    module, path = _train_and_save(tmp_path, "lddmm", shape=(16, 12))
    module.num_steps = 2
    tr = trainer(tmp_path)
    tr.strategy.connect(module)
    tr.save_checkpoint(tmp_path / "k2.ckpt")
    loaded = load_registration_checkpoint(tmp_path / "k2.ckpt")
    assert loaded.num_steps == 2
    assert list(loaded.hparams.image_shape) == [16, 12] and loaded.hparams.spacing_mode == "parity"


def test_hydra_containers_become_plain(tmp_path):
    cfg = OmegaConf.create({"sigmas": [0.05, 0.1], "features": [4, 8], "kw": {"windows": [5]}})
    module = RegistrationNetModule(
        "rdmm", image_shape=OmegaConf.create([16, 16]), sigmas=cfg.sigmas,
        features=cfg.features, similarity="mk-lncc", similarity_kwargs=cfg.kw,
    )  # fmt: skip
    assert type(module.hparams.sigmas) is list and type(module.hparams.similarity_kwargs) is dict
    tr = trainer(tmp_path)
    tr.strategy.connect(module)
    tr.save_checkpoint(tmp_path / "h.ckpt")
    torch.load(tmp_path / "h.ckpt", weights_only=True)


def test_errors_are_one_line(tmp_path):
    _, path = _train_and_save(tmp_path, "svf")
    cases = {
        "checkpoint not found": lambda: load_registration_checkpoint(tmp_path / "none.ckpt"),
        "holds a 'svf' model, expected rdmm": lambda: load_registration_checkpoint(path, "rdmm"),
        "grid settings mismatch": lambda: load_registration_checkpoint(path, expected_dim=3),
    }
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cases["truncated or corrupt"] = lambda: load_registration_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    cases["not an rdmm-lightning model checkpoint"] = lambda: load_registration_checkpoint(foreign)
    for expected, call in cases.items():
        with pytest.raises(CheckpointError, match=expected) as info:
            call()
        assert "\n" not in str(info.value)


def test_unsafe_checkpoint_needs_trust(tmp_path):
    _, path = _train_and_save(tmp_path, "svf")
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"] = OmegaConf.create({"a": 1})  # not loadable with weights_only=True
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(ckpt, unsafe)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_registration_checkpoint(unsafe)
    assert load_registration_checkpoint(unsafe, trusted=True).model_name == "svf"


def test_affine_checkpoint_embedded(tmp_path):
    affine, affine_path = _train_and_save(tmp_path, "affine", name="affine.ckpt")
    module = make_module("rdmm", (16, 16), affine_checkpoint=str(affine_path), log_figures=False)
    assert module.hparams.affine_net["num_steps"] == 2
    for (k, a), b in zip(affine.net.state_dict().items(), module.affine_net.state_dict().values()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in module.affine_net.parameters())
    tr = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    tr.fit(module, loader((16, 16), n=1, batch_size=1))
    tr.save_checkpoint(tmp_path / "rdmm.ckpt")
    affine_path.unlink()  # the registration checkpoint is self-contained
    batch = batch_of((16, 16))
    loaded = load_registration_checkpoint(tmp_path / "rdmm.ckpt", "rdmm")
    _same_result(
        module.predict(batch["source"], batch["target"]),
        loaded.predict(batch["source"], batch["target"]),
    )
    assert loaded.predict(batch["source"], batch["target"]).affine.shape == (1, 2, 3)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        make_module("rdmm", (16, 16), affine_checkpoint=str(affine_path))


def test_preprocessing_record_and_the_fallback_for_older_checkpoints():
    from rdmm_lightning.io.preprocessing import PreprocessingConfig
    from rdmm_lightning.models.checkpoint import preprocessing_record

    record = PreprocessingConfig(resize_shape=(8, 8, 8), intensity_percentiles=None)
    config = {"data": {"preprocessing": {"resize_shape": [4, 4, 4], "cache": "x"}}}
    new = {"datamodule_hyper_parameters": {"preprocessing": record.to_dict()}}
    assert preprocessing_record({**new, "rdmm_config": config}) == record  # the record wins
    # older checkpoints: the data module's raw options are not a record; the training config's
    # options are read as the data module read them (unknown keys ignored, defaults filled)
    old = {"datamodule_hyper_parameters": {"preprocessing": {"resize_shape": [8, 8, 8]}}}
    assert preprocessing_record({**old, "rdmm_config": config}) == PreprocessingConfig(
        resize_shape=(4, 4, 4)
    )
    assert preprocessing_record(old) is None
    assert preprocessing_record({"rdmm_config": {"data": {"root": "x"}}}) is None
    with pytest.raises(ValueError, match="resize_shape"):
        preprocessing_record({"rdmm_config": {"data": {"preprocessing": {"resize_shape": [0]}}}})
