"""Training bfloat16 networks on a CPU without native bfloat16 warns once, naming the option."""

from __future__ import annotations

import warnings

import pytest
from omegaconf import OmegaConf

from rdmm_lightning.training.run import warn_emulated_bfloat16
from tests.models.helpers import make_module


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_bfloat16_on_a_cpu_without_it_warns(monkeypatch, accelerator):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = OmegaConf.create({"trainer": {"accelerator": accelerator}})
    module = make_module("svf", (8, 8), network_precision="bfloat16")
    with pytest.warns(UserWarning, match="model.network_precision=float32"):
        assert warn_emulated_bfloat16(cfg, module)


def test_float32_or_a_gpu_run_does_not_warn(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cpu = OmegaConf.create({"trainer": {"accelerator": "cpu"}})
    gpu = OmegaConf.create({"trainer": {"accelerator": "gpu"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_emulated_bfloat16(cpu, make_module("svf", (8, 8)))
        bf16 = make_module("svf", (8, 8), network_precision="bfloat16")
        assert not warn_emulated_bfloat16(gpu, bf16)
