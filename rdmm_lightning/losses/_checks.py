"""Input validation and reductions shared by the loss functions."""

from __future__ import annotations

from torch import Tensor


def check_pair(warped: Tensor, target: Tensor) -> None:
    """Raise ValueError unless both are ``(B, C, *S)`` with 2 or 3 spatial dims and equal shapes."""
    for name, x in (("warped", warped), ("target", target)):
        if not isinstance(x, Tensor) or x.dim() not in (4, 5):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name} must be a tensor of shape (B, C, *S) with 2 or 3 spatial dims; got {shape}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point; got {x.dtype}")
    if warped.shape != target.shape:
        raise ValueError(
            f"target must have the shape of warped {tuple(warped.shape)}; got {tuple(target.shape)}"
        )


def check_mask(mask: Tensor | None, warped: Tensor) -> Tensor | None:
    """Check ``mask: (B, 1, *S)`` (or ``(1, 1, *S)``) against ``warped: (B, C, *S)`` and return
    it in the dtype of ``warped``."""
    if mask is None:
        return None
    batch, spatial = warped.shape[0], tuple(warped.shape[2:])
    ok = (
        isinstance(mask, Tensor)
        and mask.dim() == warped.dim()
        and mask.shape[0] in (1, batch)
        and mask.shape[1] == 1
        and tuple(mask.shape[2:]) == spatial
    )
    if not ok:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"mask must have shape (B, 1, *S) = ({batch}, 1, {', '.join(map(str, spatial))}) "
            f"(batch 1 is broadcast); got {shape}"
        )
    return mask.to(warped.dtype)


def reduce(values: Tensor, reduction: str) -> Tensor:
    """``values: (B,)`` -> scalar mean (``"mean"``) or unchanged (``"none"``)."""
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")


def check_reduction(reduction: str) -> None:
    """Raise ValueError for a reduction other than ``"mean"`` or ``"none"``."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
