"""Dice overlap per label of integer label maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["dice_per_label", "mean_dice"]


def dice_per_label(
    warped: Tensor, target: Tensor, labels: Sequence[int] | None = None
) -> dict[int, Tensor]:
    """Dice ``2|A and B| / (|A| + |B|)`` per label for integer maps ``(B, 1, *S)``.

    ``labels`` defaults to the labels present in either map, background (0) excluded.
    Returns ``{label: (B,)}``; a label absent from both maps of a batch item scores 1.
    """
    if warped.shape != target.shape:
        raise ValueError(
            f"warped and target label maps must have the same shape; got {tuple(warped.shape)} "
            f"and {tuple(target.shape)}"
        )
    if torch.is_floating_point(warped) or torch.is_floating_point(target):
        raise ValueError("label maps must be integer tensors")
    if labels is None:
        present = torch.unique(torch.cat([warped.flatten(), target.flatten()]))
        labels = [int(v) for v in present.tolist() if v != 0]
    a_flat = warped.flatten(1)
    b_flat = target.flatten(1)
    out: dict[int, Tensor] = {}
    for lab in labels:
        a = a_flat == lab
        b = b_flat == lab
        inter = (a & b).sum(dim=1).double()
        total = (a.sum(dim=1) + b.sum(dim=1)).double()
        out[int(lab)] = torch.where(
            total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)
        )
    return out


def mean_dice(warped: Tensor, target: Tensor, labels: Sequence[int] | None = None) -> Tensor:
    """Mean Dice over labels (see :func:`dice_per_label`); ``(B,)``. NaN if there is no label."""
    per = dice_per_label(warped, target, labels)
    if not per:
        return torch.full((warped.shape[0],), float("nan"), dtype=torch.float64)
    return torch.stack(list(per.values()), dim=0).mean(dim=0)
