r"""Image similarity losses (functional). Each returns a loss to *minimise*.

All take ``warped, target: (B, C, *S)`` (2 or 3 spatial dims, same shape) and an optional
``mask: (B, 1, *S)`` (or ``(1, 1, *S)``) of voxel weights; voxels with weight 0 do not influence
the loss. The result is the mean over the batch (``reduction="mean"``) or one value per batch item
``(B,)`` (``reduction="none"``); channels are averaged. Intensities are expected in [0, 1].

Differences from the reference code (reference-notes.md §3.3): no division by ``sigma^2`` and no
sum over the batch (scale with the loss weight instead); SSD is a voxel *mean*, not an integral;
(mk-)LNCC uses the plain (not squared) local correlation and windows at every voxel (stride 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_mask, check_pair, reduce
from .local_sums import IntOrSeq, local_mean, local_sum

__all__ = [
    "ssd_loss",
    "ncc_loss",
    "local_ncc_map",
    "lncc_loss",
    "MkLnccTier",
    "MkLnccSettings",
    "DEFAULT_MK_LNCC_TIERS",
    "default_mk_lncc_settings",
    "mk_lncc_loss",
    "mutual_information_loss",
]


def _spatial_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``x: (B, C, *S)`` over ``S``, weighted by ``mask: (B|1, 1, *S)``; ``(B, C)``."""
    if mask is None:
        return x.flatten(2).mean(dim=2)
    m = mask.flatten(2)
    tiny = torch.finfo(x.dtype).tiny
    return (x.flatten(2) * m).sum(dim=2) / m.sum(dim=2).clamp_min(tiny)


def _centred(x: Tensor, mask: Tensor | None, detach: bool = False) -> Tensor:
    mean = _spatial_mean(x, mask)
    mean = mean.detach() if detach else mean
    return x - mean[(...,) + (None,) * (x.dim() - 2)]


def ssd_loss(
    warped: Tensor, target: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Mean squared difference over voxels and channels (mask-weighted mean if ``mask``)."""
    check_pair(warped, target)
    mask = check_mask(mask, warped)
    return reduce(_spatial_mean((warped - target) ** 2, mask).mean(dim=1), reduction)


def ncc_loss(
    warped: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> Tensor:
    r"""``1 - NCC`` with the global ``NCC = cov / sqrt(var_w var_t + eps)`` per channel
    (mask-weighted statistics). 0 for ``target = a * warped + b`` with ``a > 0`` (up to ``eps``),
    2 for ``a < 0``. The reference's ``ncc`` is ``1 - NCC^2`` (sign-insensitive)."""
    check_pair(warped, target)
    mask = check_mask(mask, warped)
    dx, dy = _centred(warped, mask), _centred(target, mask)
    cov = _spatial_mean(dx * dy, mask)
    var = _spatial_mean(dx * dx, mask) * _spatial_mean(dy * dy, mask)
    return reduce(1.0 - (cov / (var + eps).sqrt()).mean(dim=1), reduction)


def local_ncc_map(
    warped: Tensor,
    target: Tensor,
    window: IntOrSeq = 9,
    kernel: str = "box",
    dilation: IntOrSeq = 1,
    mask: Tensor | None = None,
    eps: float = 1e-8,
    squared: bool = False,
) -> Tensor:
    r"""Local correlation ``cc = cov / sqrt(var_w var_t + eps)`` at every voxel, ``(B, C, *S)``
    (``cov^2 / (var_w var_t + eps)`` if ``squared``, as in the reference).

    Local statistics are weighted means over the window at each voxel (box or Gaussian weights
    times the mask), restricted to the part of the window inside the image: window sums
    (:mod:`.local_sums`, zero padding) are divided by the window sum of ones (or of the mask);
    without a mask, :func:`~.local_sums.local_mean` does both in one pass.
    Hence ``cc = 1`` (up to ``eps``) wherever ``target = a * warped + b`` with ``a > 0``, the
    border included. ``eps`` is added to the product of local variances (intensity^4 units); flat
    regions give ``cc = 0``. Inputs are first centred by their global mean (exact; it improves
    float32 accuracy of the ``E[x^2] - E[x]^2`` variances).
    """
    check_pair(warped, target)
    mask = check_mask(mask, warped)
    x, y = _centred(warped, mask, detach=True), _centred(target, mask, detach=True)
    # Two stacks, so that autograd sends the gradient back through the window sums of the
    # warped image's statistics only (the target's are constant unless it requires grad).
    moving, fixed = torch.cat([x, x * x, x * y], dim=1), torch.cat([y, y * y], dim=1)
    if mask is None:
        mx, mxx, mxy = local_mean(moving, window, kernel, dilation).chunk(3, dim=1)
        my, myy = local_mean(fixed, window, kernel, dilation).chunk(2, dim=1)
    else:
        tiny = torch.finfo(x.dtype).tiny
        count = local_sum(mask, window, kernel, dilation).clamp_min(tiny)
        mx, mxx, mxy = (local_sum(moving * mask, window, kernel, dilation) / count).chunk(3, 1)
        my, myy = (local_sum(fixed * mask, window, kernel, dilation) / count).chunk(2, dim=1)
    var = (mxx - mx * mx).clamp_min(0.0) * (myy - my * my).clamp_min(0.0)
    cov = mxy - mx * my
    if squared:
        return cov * cov / (var + eps)
    return cov / (var + eps).sqrt()


def lncc_loss(
    warped: Tensor,
    target: Tensor,
    window: IntOrSeq = 9,
    kernel: str = "box",
    mask: Tensor | None = None,
    eps: float = 1e-8,
    dilation: IntOrSeq = 1,
    squared: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""``1 - mean(cc)`` with the local correlation ``cc`` of :func:`local_ncc_map`, averaged over
    voxels (mask-weighted) and channels. ``window``: taps per axis (int or tuple, ``(B, C, *S)``
    order); ``kernel``: ``"box"`` or ``"gaussian"`` (sigma = (window - 1) / 4 taps). Range [0, 2]
    (0 = perfect)."""
    cc = local_ncc_map(warped, target, window, kernel, dilation, mask, eps, squared)
    mask = check_mask(mask, warped)
    if mask is None:
        mean_cc = cc.flatten(1).mean(dim=1)
    else:
        mean_cc = _spatial_mean(cc, mask).mean(dim=1)
    return reduce(1.0 - mean_cc, reduction)


@dataclass(frozen=True)
class MkLnccTier:
    """mk-LNCC kernels used when the smallest image side is ``>= min_side``: window sizes as
    ``fractions`` of the axis length, with ``weights`` and ``dilations`` (one per kernel)."""

    min_side: int
    fractions: tuple[float, ...]
    weights: tuple[float, ...]
    dilations: tuple[int, ...]


@dataclass(frozen=True)
class MkLnccSettings:
    """Per-kernel window sizes (one tuple per kernel, per axis), weights and dilations."""

    windows: tuple[tuple[int, ...], ...]
    weights: tuple[float, ...]
    dilations: tuple[int, ...]


# reference-notes.md §3.3 (mermaid's resol_bound [128, 64]); first matching tier wins.
DEFAULT_MK_LNCC_TIERS: tuple[MkLnccTier, ...] = (
    MkLnccTier(128, (1 / 16, 1 / 8, 1 / 4), (0.1, 0.3, 0.6), (2, 2, 2)),
    MkLnccTier(64, (1 / 4, 1 / 2), (0.3, 0.7), (2, 2)),
    MkLnccTier(0, (1 / 2,), (1.0,), (1,)),
)


def default_mk_lncc_settings(
    shape: Sequence[int],
    tiers: Sequence[MkLnccTier] = DEFAULT_MK_LNCC_TIERS,
    per_axis_sizes: bool = True,
    odd: bool = True,
) -> MkLnccSettings:
    r"""mk-LNCC kernels for a spatial ``shape``, following reference-notes.md §3.3.

    The tier (number of kernels, weights, dilations) is chosen from the smallest side ``s`` as in
    the reference: ``s >= 128``: fractions 1/16, 1/8, 1/4, weights 0.1, 0.3, 0.6, dilation 2;
    ``64 <= s < 128``: 1/4, 1/2, weights 0.3, 0.7, dilation 2; else 1/2, weight 1, dilation 1.

    The reference uses cubic windows ``int(s * fraction)`` relative to the smallest side, which
    can span a whole axis (80 slices: 40 taps, dilated extent 79). Here, with
    ``per_axis_sizes=True`` (default), each axis gets ``int(n_axis * fraction)`` taps instead
    (``s`` for every axis if False), rounded down to an odd number if ``odd`` (centred windows),
    and capped so that the dilated extent ``d (k - 1) + 1`` does not exceed the axis length.
    Examples: (200, 200) -> 11, 25, 49 taps, dilation 2; (80, 192, 192) -> (19, 47, 47) and
    (39, 95, 95), dilation 2, weights 0.3, 0.7.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must have 2 or 3 positive entries; got {shape}")
    side = min(shape)
    tier = next((t for t in tiers if side >= t.min_side), None)
    if tier is None:
        raise ValueError(f"no mk-LNCC tier matches the smallest side {side}")
    windows = []
    for frac, d in zip(tier.fractions, tier.dilations):
        sizes = []
        for n in shape:
            k = max(1, int((n if per_axis_sizes else side) * frac))
            k = min(k, (n - 1) // d + 1)
            if odd and k % 2 == 0:
                k -= 1
            sizes.append(k)
        windows.append(tuple(sizes))
    return MkLnccSettings(tuple(windows), tuple(tier.weights), tuple(tier.dilations))


def mk_lncc_loss(
    warped: Tensor,
    target: Tensor,
    windows: Sequence[IntOrSeq] | None = None,
    weights: Sequence[float] | None = None,
    dilations: Sequence[IntOrSeq] | None = None,
    kernel: str = "box",
    mask: Tensor | None = None,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-kernel LNCC ``sum_k weight_k * lncc_loss(window_k, dilation_k)``.

    ``windows=None`` takes :func:`default_mk_lncc_settings` of the image shape (then ``weights``
    and ``dilations``, when given, override the defaults). Otherwise ``weights`` default to equal
    weights summing to 1 and ``dilations`` to 1. With weights summing to 1 the range is [0, 2].
    """
    check_pair(warped, target)
    if windows is None:
        settings = default_mk_lncc_settings(warped.shape[2:])
        windows = settings.windows
        weights = settings.weights if weights is None else weights
        dilations = settings.dilations if dilations is None else dilations
    windows = list(windows)
    if not windows:
        raise ValueError("windows must contain at least one window size")
    weights = [1.0 / len(windows)] * len(windows) if weights is None else list(weights)
    dilations = [1] * len(windows) if dilations is None else list(dilations)
    if len(weights) != len(windows) or len(dilations) != len(windows):
        raise ValueError(
            f"windows, weights and dilations must have the same length; got {len(windows)}, "
            f"{len(weights)} and {len(dilations)}"
        )
    total = 0.0
    for window, weight, dilation in zip(windows, weights, dilations):
        loss = lncc_loss(warped, target, window, kernel, mask, eps, dilation, reduction="none")
        total = total + float(weight) * loss
    return reduce(total, reduction)


def _parzen_weights(x: Tensor, num_bins: int, sigma_ratio: float) -> Tensor:
    """Soft bin memberships ``(B*C, N, num_bins)`` of ``x: (B, C, *S)`` (rows sum to 1)."""
    centres = torch.linspace(0.0, 1.0, num_bins, dtype=x.dtype, device=x.device)
    sigma = sigma_ratio / (num_bins - 1)
    logits = -0.5 * ((x.flatten(2).flatten(0, 1).unsqueeze(-1) - centres) / sigma) ** 2
    return logits.softmax(dim=-1)


def mutual_information_loss(
    warped: Tensor,
    target: Tensor,
    num_bins: int = 32,
    sigma_ratio: float = 0.5,
    mask: Tensor | None = None,
    normalized: bool = False,
    eps: float = 1e-10,
    reduction: str = "mean",
) -> Tensor:
    r"""``-MI`` (nats), or ``-NMI`` with ``NMI = (H_w + H_t) / H_{w,t}`` in [1, 2] if
    ``normalized``, from a Parzen-window joint histogram.

    Intensities are assumed in [0, 1]: ``num_bins`` bin centres span [0, 1] and each voxel is
    spread over the bins with Gaussian weights of std ``sigma_ratio`` bin widths, normalised to
    sum 1 (a softmax, so values outside [0, 1] go to the edge bins). Channels are treated
    separately and averaged. Memory is ``O(B C N num_bins)`` for ``N`` voxels.
    """
    check_pair(warped, target)
    mask = check_mask(mask, warped)
    if num_bins < 2 or not sigma_ratio > 0:
        raise ValueError(f"need num_bins >= 2 and sigma_ratio > 0; got {num_bins}, {sigma_ratio}")
    batch, channels = warped.shape[:2]
    pw = _parzen_weights(warped, num_bins, sigma_ratio)
    pt = _parzen_weights(target, num_bins, sigma_ratio)
    if mask is not None:
        m = mask.expand(batch, channels, *mask.shape[2:]).flatten(2).flatten(0, 1)
        pw = pw * m.unsqueeze(-1)
    joint = pw.transpose(1, 2) @ pt  # (B*C, bins, bins)
    joint = joint / joint.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(joint.dtype).tiny)
    p_w, p_t = joint.sum(dim=2), joint.sum(dim=1)
    h_w = -(p_w * (p_w + eps).log()).sum(dim=1)
    h_t = -(p_t * (p_t + eps).log()).sum(dim=1)
    h_wt = -(joint * (joint + eps).log()).sum(dim=(1, 2))
    score = (h_w + h_t) / h_wt.clamp_min(eps) if normalized else h_w + h_t - h_wt
    return reduce(-score.view(batch, channels).mean(dim=1), reduction)
