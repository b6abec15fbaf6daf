"""Mixed-precision execution of the convolutional networks (:class:`NetworkPrecision`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from ..options import NetworkPrecision, either, values

__all__ = ["check_precision", "network_autocast"]


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
