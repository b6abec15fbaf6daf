"""Per-channel views of a tensor whose backward pass does not allocate one full-size zero
tensor per view.

Autograd's backward of ``x[:, i]`` (a slice) writes the gradient into a zero tensor the size of
``x``; taking every channel by slicing therefore costs one full-size fill and one full-size
addition per channel in the backward pass. :func:`channels` takes them with ``unbind``, whose
backward stacks the channel gradients once.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["channels"]


def channels(x: Tensor, dim: int = 1, keepdim: bool = False) -> tuple[Tensor, ...]:
    """The slices of ``x`` along ``dim``, e.g. ``(B, C, *S) -> C x (B, *S)`` (or ``(B, 1, *S)``
    with ``keepdim``), as views with a single stacking backward."""
    parts = x.unbind(dim)
    if keepdim:
        return tuple(p.unsqueeze(dim) for p in parts)
    return parts
