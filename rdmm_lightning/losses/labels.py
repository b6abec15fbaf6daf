r"""Label overlap loss: soft Dice between warped source labels and target labels.

The auxiliary segmentation loss of semi-supervised learned registration (VoxelMorph's
"auxiliary information", Balakrishnan et al., TMI 2019): when the training volumes carry label
maps, ``1 - mean_l soft Dice_l(P_s o phi^{-1}, P_t)`` over the labels ``l`` of the pair, with
``P`` the one-hot label probabilities. Only training uses it; inference needs no labels.
The loss may be evaluated on every ``stride``-th voxel of the target grid (the source's one-hot
maps stay whole and are sampled trilinearly at the map's values there): 8x fewer samples per
label with stride 2, the target's labels exact at those voxels (no blurring of small structures,
no shift between grids), and a loss of 0 for identical maps and the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.grid import check_map
from ..ops.warp import sample_field
from ._checks import reduce

__all__ = ["label_values", "label_probabilities", "soft_dice_loss", "warped_label_dice_loss"]


def _check_labels(labels: Tensor, name: str) -> None:
    if not isinstance(labels, Tensor) or labels.dim() not in (4, 5) or labels.shape[1] != 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a label map of shape (B, 1, *S); got {shape}")
    if torch.is_floating_point(labels) or labels.is_complex():
        raise ValueError(f"{name} must be an integer tensor; got {labels.dtype}")


def label_values(*label_maps: Tensor) -> Tensor:
    """Sorted foreground values ``(C,)`` (background 0 excluded) present in any of the maps."""
    values = torch.unique(torch.cat([m.flatten() for m in label_maps]))
    return values[values != 0]


def label_probabilities(labels: Tensor, values: Tensor, dtype=torch.float32) -> Tensor:
    """One-hot probabilities ``(B, C, *S)`` of ``labels: (B, 1, *S)`` for the label
    ``values: (C,)`` (sorted; other values, background included, get no channel)."""
    _check_labels(labels, "labels")
    values = values.to(device=labels.device, dtype=labels.dtype)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(
            f"values must be a non-empty 1D tensor of labels; got {tuple(values.shape)}"
        )
    index = torch.searchsorted(values, labels.contiguous())  # (B, 1, *S): each voxel's label
    index = index.clamp_max(values.numel() - 1)
    known = values[index] == labels
    channels = torch.arange(values.numel(), device=labels.device)
    view = (1, -1) + (1,) * (labels.dim() - 2)
    return ((index == channels.view(view)) & known).to(dtype)


def soft_dice_loss(
    warped: Tensor, target: Tensor, eps: float = 1e-6, reduction: str = "mean"
) -> Tensor:
    """``1 - mean_c 2 <a_c, b_c> / (|a_c| + |b_c|)`` over channels ``c`` of probability maps
    ``warped, target: (B, C, *S)``; channels empty in both maps of an item are left out of its
    mean (they carry no overlap to learn). Returns a scalar or ``(B,)``."""
    if warped.shape != target.shape or warped.dim() not in (4, 5):
        raise ValueError(
            f"warped and target must be (B, C, *S) of one shape; got {tuple(warped.shape)} "
            f"and {tuple(target.shape)}"
        )
    inter = (warped * target).flatten(2).sum(-1)
    total = warped.flatten(2).sum(-1) + target.flatten(2).sum(-1)
    present = (total > eps).to(warped.dtype)
    dice = 2 * inter / total.clamp_min(eps)
    mean = (dice * present).sum(1) / present.sum(1).clamp_min(1)
    return reduce(1 - mean, reduction)


def warped_label_dice_loss(
    source_label: Tensor,
    target_label: Tensor,
    phi_inv: Tensor,
    spacing: Sequence[float],
    stride: int = 1,
    reduction: str = "mean",
    max_labels: int | None = None,
) -> Tensor:
    """Soft Dice loss between the source labels pulled back by ``phi_inv: (B, D, *S)`` and the
    target labels (``(B, 1, *S)`` integer maps on the grid of ``phi_inv``, domain ``spacing``),
    on every ``stride``-th voxel of that grid along each axis (``phi_inv`` and the target taken
    there exactly; the source's one-hot maps sampled trilinearly at the map's values).
    Differentiable in ``phi_inv``; labels of either map count. ``max_labels``: at most this
    many of them per call, drawn at random (torch's global generator) -- an unbiased estimate
    of the mean over labels whose cost does not grow with the label count (148 brain labels:
    the one-hot maps and their sampling dominate a 64x80x80 training step).
    """
    check_map(phi_inv, "phi_inv")
    _check_labels(source_label, "source_label")
    _check_labels(target_label, "target_label")
    full = tuple(phi_inv.shape[2:])
    for name, lab in (("source_label", source_label), ("target_label", target_label)):
        if tuple(lab.shape[2:]) != full or lab.shape[0] != phi_inv.shape[0]:
            raise ValueError(
                f"{name} must have shape ({phi_inv.shape[0]}, 1, {', '.join(map(str, full))}) "
                f"to match phi_inv; got {tuple(lab.shape)}"
            )
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer; got {stride}")
    if max_labels is not None and (int(max_labels) != max_labels or max_labels < 1):
        raise ValueError(f"max_labels must be a positive integer or None; got {max_labels}")
    values = label_values(source_label, target_label)
    if max_labels is not None and values.numel() > max_labels:
        pick = torch.randperm(values.numel())[: int(max_labels)].to(values.device)
        values = values[pick].sort().values
    if values.numel() == 0:
        return reduce(phi_inv.new_zeros(phi_inv.shape[0]), reduction)
    every = (slice(None), slice(None)) + (slice(None, None, int(stride)),) * len(full)
    source = label_probabilities(source_label, values, phi_inv.dtype)
    target = label_probabilities(target_label[every], values, phi_inv.dtype)
    warped = sample_field(source, phi_inv[every], spacing, padding_mode="zeros")
    return soft_dice_loss(warped, target, reduction=reduction)
