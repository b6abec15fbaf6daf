"""Mixed-precision execution of the convolutional networks (:class:`NetworkPrecision`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..options import InferencePrecision, NetworkPrecision, either, values

__all__ = [
    "check_precision",
    "network_autocast",
    "native_bfloat16",
    "resolve_inference_precision",
    "set_network_precision",
]

# oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) from which bfloat16 dot products run natively
_BF16_ISA_PREFIXES = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL")


def check_precision(precision: str) -> str:
    """``precision`` if it names a :class:`NetworkPrecision`, else a ValueError."""
    if precision not in values(NetworkPrecision):
        raise ValueError(f"network precision must be {either(NetworkPrecision)}; got {precision!r}")
    return str(precision)


@contextlib.contextmanager
def network_autocast(x: Tensor, precision: str) -> Iterator[None]:
    """Autocast to bfloat16 on ``x``'s device for ``precision="bfloat16"`` and a float32 ``x``
    (float64 inputs, as in reference tests, and ``"float32"`` run unchanged). The caller casts
    the network's output back to ``x.dtype``."""
    if precision == NetworkPrecision.BFLOAT16 and x.dtype == torch.float32:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively: a CUDA GPU with bfloat16
    units (Ampere or later), a CPU with AVX512-BF16 or AMX (and oneDNN not capped below them by
    ``ONEDNN_MAX_CPU_ISA``). Elsewhere bfloat16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch without the keyword
            return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return True
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap != "DEFAULT" and not cap.startswith(_BF16_ISA_PREFIXES):
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_inference_precision(
    requested: str | None, trained: str, device: torch.device | str
) -> str:
    """The network precision to run a checkpoint trained in ``trained`` with: ``requested``
    (:class:`~rdmm_lightning.options.InferencePrecision`; None is ``"auto"``): ``auto`` keeps
    ``trained`` except bfloat16 where :func:`native_bfloat16` is false (then float32)."""
    requested = InferencePrecision.AUTO.value if requested is None else str(requested)
    if requested not in values(InferencePrecision):
        raise ValueError(
            f"network precision must be {either(InferencePrecision)}; got {requested!r}"
        )
    trained = check_precision(trained)
    if requested != InferencePrecision.AUTO:
        return requested
    if trained == NetworkPrecision.BFLOAT16 and not native_bfloat16(device):
        return NetworkPrecision.FLOAT32.value
    return trained


def set_network_precision(module: nn.Module, precision: str) -> int:
    """Set the compute precision of every network in ``module`` that has one (UNets, affine
    encoders: modules whose ``precision`` was set by :func:`check_precision`); returns how many.
    Weights are untouched (they are float32 in either precision)."""
    precision = check_precision(precision)
    changed = 0
    for sub in module.modules():
        if getattr(type(sub), "has_network_precision", False):
            sub.precision = precision
            changed += 1
    return changed
