"""``nn.Module`` wrappers of the similarity losses and a factory by name.

Each module stores its settings and calls the function of :mod:`.similarity` in ``forward(warped,
target, mask=None)`` with ``warped, target: (B, C, *S)`` and ``mask: (B, 1, *S)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..options import LocalKernel, Similarity, either, values
from ._checks import check_reduction
from .local_sums import IntOrSeq
from .similarity import (
    lncc_loss,
    mk_lncc_loss,
    mutual_information_loss,
    ncc_loss,
    ssd_loss,
)

__all__ = [
    "SSDLoss",
    "NCCLoss",
    "LNCCLoss",
    "MultiKernelLNCCLoss",
    "MutualInformationLoss",
    "SIMILARITY_NAMES",
    "similarity_from_name",
]


def _check_kernel(kernel: str) -> None:
    if kernel not in values(LocalKernel):
        raise ValueError(f"kernel must be {either(LocalKernel)}; got {kernel!r}")


class _SimilarityLoss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction


class SSDLoss(_SimilarityLoss):
    """Mean squared difference (:func:`.similarity.ssd_loss`)."""

    def forward(self, warped: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return ssd_loss(warped, target, mask, self.reduction)


class NCCLoss(_SimilarityLoss):
    """``1 - NCC``, global (:func:`.similarity.ncc_loss`)."""

    def __init__(self, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.eps = eps

    def forward(self, warped: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return ncc_loss(warped, target, mask, self.eps, self.reduction)


class LNCCLoss(_SimilarityLoss):
    """``1 - mean local correlation`` (:func:`.similarity.lncc_loss`)."""

    def __init__(
        self,
        window: IntOrSeq = 9,
        kernel: str = "box",
        eps: float = 1e-8,
        dilation: IntOrSeq = 1,
        squared: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        _check_kernel(kernel)
        self.window, self.kernel, self.eps = window, kernel, eps
        self.dilation, self.squared = dilation, squared

    def forward(self, warped: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return lncc_loss(
            warped,
            target,
            self.window,
            self.kernel,
            mask,
            self.eps,
            self.dilation,
            self.squared,
            self.reduction,
        )


class MultiKernelLNCCLoss(_SimilarityLoss):
    """Weighted sum of LNCC over several windows (:func:`.similarity.mk_lncc_loss`); with
    ``windows=None`` the kernels follow the image size of each call
    (:func:`.similarity.default_mk_lncc_settings`)."""

    def __init__(
        self,
        windows: Sequence[IntOrSeq] | None = None,
        weights: Sequence[float] | None = None,
        dilations: Sequence[IntOrSeq] | None = None,
        kernel: str = "box",
        eps: float = 1e-8,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        _check_kernel(kernel)
        self.windows = None if windows is None else list(windows)
        self.weights = None if weights is None else list(weights)
        self.dilations = None if dilations is None else list(dilations)
        self.kernel, self.eps = kernel, eps

    def forward(self, warped: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return mk_lncc_loss(
            warped,
            target,
            self.windows,
            self.weights,
            self.dilations,
            self.kernel,
            mask,
            self.eps,
            self.reduction,
        )


class MutualInformationLoss(_SimilarityLoss):
    """``-MI`` (or ``-NMI``) with Parzen windows (:func:`.similarity.mutual_information_loss`)."""

    def __init__(
        self,
        num_bins: int = 32,
        sigma_ratio: float = 0.5,
        normalized: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        if num_bins < 2 or not sigma_ratio > 0:
            raise ValueError(
                f"need num_bins >= 2 and sigma_ratio > 0; got {num_bins}, {sigma_ratio}"
            )
        self.num_bins, self.sigma_ratio, self.normalized = num_bins, sigma_ratio, normalized

    def forward(self, warped: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return mutual_information_loss(
            warped,
            target,
            self.num_bins,
            self.sigma_ratio,
            mask,
            self.normalized,
            reduction=self.reduction,
        )


_REGISTRY: dict[Similarity, type[_SimilarityLoss]] = {
    Similarity.SSD: SSDLoss,
    Similarity.NCC: NCCLoss,
    Similarity.LNCC: LNCCLoss,
    Similarity.MK_LNCC: MultiKernelLNCCLoss,
    Similarity.MI: MutualInformationLoss,
}
SIMILARITY_NAMES: tuple[str, ...] = values(Similarity)


def similarity_from_name(name: str, **kwargs) -> nn.Module:
    """Build a similarity loss module from its name (``"ssd"``, ``"ncc"``, ``"lncc"``,
    ``"mk-lncc"``, ``"mi"``; case-insensitive, ``_`` accepted for ``-``); ``kwargs`` go to the
    constructor."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(f"unknown similarity {name!r}; valid names: {', '.join(SIMILARITY_NAMES)}")
    return _REGISTRY[key](**kwargs)
