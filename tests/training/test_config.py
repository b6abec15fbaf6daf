"""Composing the training config: groups, experiments, and one-line errors for bad input."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rdmm_lightning.training import (
    TrainingConfigError,
    check_config,
    compose_train_config,
    config_root,
    group_options,
    main,
)


def compose(*overrides: str):
    return compose_train_config(list(overrides)).cfg


def error_of(*overrides: str) -> str:
    with pytest.raises(TrainingConfigError) as info:
        check_config(compose(*overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_folder_is_the_installed_package_data():
    root = config_root()
    assert (root / "train.yaml").is_file()
    for group in ("model", "data", "trainer", "logger", "callbacks", "experiment"):
        assert group_options(group), group
    assert group_options("model") == ["affine_net", "lddmm_net", "rdmm_net", "svf_net"]
    assert group_options("trainer") == ["cpu", "ddp", "ddp_cpu", "gpu"]
    assert group_options("logger") == ["csv", "none", "tensorboard", "wandb"]
    assert {"synth2d", "synth3d", "ixi", "oai", "folder"} <= set(group_options("data"))


def test_default_is_the_quickstart_rdmm_net_on_synth2d():
    cfg = compose()
    assert cfg.name == "quickstart"
    assert cfg.model.model == "rdmm" and cfg.data.synthetic == "synth2d"
    assert list(cfg.model.image_shape) == list(cfg.data.preprocessing.resize_shape)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.use_distributed_sampler is False
    check_config(cfg)


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_composes_and_builds_its_model(experiment):
    overrides = [f"experiment={experiment}", "trainer=cpu"]
    cfg = compose(*overrides)
    if "affine_checkpoint" in cfg.model and OmegaConf.is_interpolation(
        cfg.model, "affine_checkpoint"
    ):
        # deformable OAI/IXI nets need an affine checkpoint; without it: a clear error
        assert "model.affine_checkpoint" in error_of(*overrides)
        cfg = compose(*overrides, "model.affine_checkpoint=null")
    check_config(cfg)
    assert cfg.name == experiment
    module = instantiate(cfg.model, _convert_="all")
    assert len(module.image_shape) == len(cfg.model.image_shape)
    for node in cfg.callbacks.values():
        instantiate(node, _convert_="all")


def test_paper_schedules_of_the_oai_rdmm_net():
    cfg = compose("experiment=oai_rdmm_net", "trainer=cpu", "model.affine_checkpoint=a.ckpt")
    assert list(cfg.model.image_shape) == [80, 192, 192]
    assert cfg.model.energy_weight == 10.0 and cfg.model.lr == 1e-4
    assert cfg.trainer.max_epochs == 500 and cfg.trainer.accumulate_grad_batches == 2
    assert cfg.callbacks.refinement_steps.start_epoch == 100
    assert cfg.callbacks.symmetry.start_epoch == 200 and cfg.callbacks.symmetry.weight == 500


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["experiment=nope"], "unknown experiment 'nope'"),
        (["model=rdmm"], "unknown model 'rdmm' (did you mean 'rdmm_net'?)"),
        (
            ["trainer.max_epoch=3"],
            "unknown config key 'trainer.max_epoch' (did you mean 'max_epochs'?)",
        ),
        (["+trainer.max_epoch=3"], "unknown config key 'trainer.max_epoch'"),
        (["epochs=3"], "unknown config key 'epochs'"),
        (["model.lrr=0.1"], "unknown config key 'model.lrr' (did you mean 'lr'?)"),
        (["+model.lrr=0.1"], "'model.lrr': not an argument of RegistrationNetModule"),
        (["data.batchsize=2"], "did you mean 'batch_size'?"),
        (["logger.csv.nme=x"], "did you mean 'name'?"),
        (["model.weight_decay=0.1"], "add it with +model.weight_decay=VALUE"),
        (["+model.weight_decay=-0.1"], "model.weight_decay=-0.1 must be >= 0"),
        (["model.lr=0"], "model.lr=0 must be > 0"),
        (["trainer.max_epochs=many"], "cannot apply trainer.max_epochs=many"),
        (["model.image_shape=???"], "missing value for model.image_shape"),
        (["model.image_shape=[32,32]"], "differs from the data grid [64, 64]"),
        (["data=synth3d"], "resize_shape=[64, 64] is 2D but the synth3d data are 3D"),
        (
            ["data=synth3d", "~data.preprocessing.resize_shape"],
            "differs from the data grid [48, 64, 64]",
        ),
        (["name=a/b"], "name 'a/b'"),
        (["+callbacks.x._target_=no.such.Thing"], "callbacks.x._target_: cannot import"),
        (
            ["experiment=ixi_affine_net", "callbacks.identity_regularizer.milestones={0:1,3:2}"],
            "use ~callbacks.identity_regularizer.milestones "
            "+callbacks.identity_regularizer.milestones=VALUE",
        ),
    ],
)
def test_bad_overrides_give_one_line_naming_the_key(overrides, expected):
    assert expected in error_of(*overrides)


def test_weight_decay_can_be_added_as_a_constructor_argument():
    cfg = compose("+model.weight_decay=1e-5")
    check_config(cfg)
    module = instantiate(cfg.model, _convert_="all")
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.Adam)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-5]
    # every trainable parameter is in that group
    (group,) = optimizer.param_groups
    assert len(group["params"]) == len(module.trainable_parameters()) > 0
    # without the override: no decay
    default = instantiate(compose().model, _convert_="all").configure_optimizers()
    default = default["optimizer"] if isinstance(default, dict) else default
    assert [g["weight_decay"] for g in default.param_groups] == [0.0]


@pytest.mark.parametrize("model", ["svf_net", "lddmm_net", "rdmm_net"])
def test_label_loss_options_reach_the_module(model):
    cfg = compose(f"model={model}", "model.label_weight=0.5", "model.label_stride=3")
    check_config(cfg)
    module = instantiate(cfg.model, _convert_="all")
    assert module.label_weight == 0.5 and module.hparams.label_stride == 3
    assert instantiate(compose(f"model={model}").model, _convert_="all").label_weight == 0


def test_ixi_aligned_experiments_train_with_labels():
    for name in ("rdmm", "lddmm"):
        cfg = compose(f"experiment=ixi_aligned_{name}_net")
        assert cfg.data.train_labels is True and cfg.model.label_weight > 0


def test_a_schedule_mapping_can_be_replaced_as_the_error_says():
    key = "callbacks.identity_regularizer.milestones"
    cfg = compose("experiment=ixi_affine_net", f"~{key}", f"+{key}={{0:1.0,3:0.1}}")
    assert OmegaConf.to_container(cfg.callbacks.identity_regularizer.milestones) == {0: 1.0, 3: 0.1}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainers_without_gpus_fail_naming_devices(trainer):
    message = error_of(f"trainer={trainer}", "trainer.devices=2")
    assert "trainer.devices=2" in message and "no" in message


def test_missing_logger_package_is_one_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    message = error_of("logger=wandb")
    assert "logger.wandb needs the wandb package" in message and "rdmm-lightning[wandb]" in message


def test_several_loggers_at_once():
    cfg = compose("logger=[csv,wandb]")
    assert set(cfg.logger) == {"csv", "wandb"}


def test_cli_prints_config_and_errors(capsys):
    assert main(["--cfg", "trainer.max_epochs=7"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.trainer.max_epochs == 7 and printed.name == "quickstart"
    assert main(["experiment=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: error: unknown experiment 'nope'") and "\n" not in err
    assert main(["--help"]) == 0
    assert "experiment" in capsys.readouterr().out
