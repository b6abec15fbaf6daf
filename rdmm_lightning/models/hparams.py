"""Hyper-parameter helpers: plain containers (so checkpoints load with ``weights_only=True``)
and validation of the training grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..options import SpacingMode, values

__all__ = ["plain", "check_image_shape", "SPACING_MODES"]

SPACING_MODES = values(SpacingMode)


def plain(value: Any) -> Any:
    """Recursively turn mappings into dicts and sequences (except str/bytes) into lists, so
    hyper-parameters hold only builtin types (OmegaConf containers from Hydra included)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    return value


def check_image_shape(image_shape: Sequence[int] | None, spacing_mode: str) -> tuple[int, ...]:
    """Validate the training grid: 2 or 3 sizes, each >= 8, and a known spacing mode."""
    if image_shape is None:
        raise ValueError("image_shape (the training grid, 2 or 3 sizes) is required")
    try:
        shape = tuple(int(n) for n in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be 2 or 3 integers; got {image_shape!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise ValueError(f"image_shape must be 2 or 3 sizes, each >= 8; got {shape}")
    if spacing_mode not in SPACING_MODES:
        raise ValueError(f"spacing_mode must be one of {SPACING_MODES}; got {spacing_mode!r}")
    return shape
