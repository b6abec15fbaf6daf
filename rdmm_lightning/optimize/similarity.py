"""Similarity selection for the optimisers: a name (with keyword arguments) or a callable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ..losses import similarity_from_name

__all__ = ["SimilarityFn", "SimilaritySpec", "build_similarity", "check_similarity"]

SimilarityFn = Callable[..., Tensor]
"""``fn(warped, target, mask=None) -> scalar`` loss to minimise."""
SimilaritySpec = str | SimilarityFn


def build_similarity(
    similarity: SimilaritySpec,
    kwargs: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """Return ``sim(warped, target, mask)`` for a similarity name or callable.

    Args:
        similarity: a name of :func:`rdmm_lightning.losses.similarity_from_name` (``"lncc"``,
            ``"mk-lncc"``, ``"ncc"``, ``"ssd"``, ``"mi"``) or a callable
            ``fn(warped, target, mask=None) -> scalar tensor`` (e.g. a loss module).
        kwargs: constructor arguments for a named similarity (override ``defaults``).
        defaults: per-name default constructor arguments.
    """
    if isinstance(similarity, str):
        key = similarity.strip().lower().replace("_", "-")
        merged = dict((defaults or {}).get(key, {}))
        merged.update(kwargs or {})
        fn = similarity_from_name(key, **merged)
    elif callable(similarity):
        if kwargs:
            raise ValueError("similarity_kwargs apply only to a similarity given by name")
        fn = similarity
    else:
        raise ValueError(
            f"similarity must be a name (lncc, mk-lncc, ncc, ssd, mi) or a callable; "
            f"got {type(similarity).__name__}"
        )

    def sim(warped: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return fn(warped, target)
        return fn(warped, target, mask=mask)

    return sim


def check_similarity(
    similarity: SimilaritySpec,
    kwargs: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Build the similarity once to check its name and arguments: a one-line ``ValueError``
    also for arguments its constructor does not take."""
    try:
        build_similarity(similarity, kwargs, defaults)
    except TypeError as exc:
        raise ValueError(f"similarity_kwargs {dict(kwargs or {})}: {exc}") from None
