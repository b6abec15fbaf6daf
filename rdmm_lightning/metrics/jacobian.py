r"""Jacobian determinant of maps and fold statistics.

The determinant is the *full* determinant of the Jacobian of a map (central differences with
linear extrapolation at the border), in voxel units so that the identity has det 1. Because the
same per-axis scaling applies to rows and columns, det J is the same in domain and voxel units.
The reference code's "det J" (product of the diagonal partials only) is available as
:func:`diagonal_jacobian_product`, labelled as such, for comparison with the paper's Tab. 6.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..ops.finite_differences import jacobian_matrix
from ..ops.grid import check_map, domain_spacing

__all__ = [
    "jacobian_determinant",
    "fold_statistics",
    "diagonal_jacobian_product",
]


def _det(j: Tensor) -> Tensor:
    """Determinant of ``(B, D, D, *S)`` over the two matrix dims -> ``(B, *S)``."""
    if j.shape[1] == 2:
        return j[:, 0, 0] * j[:, 1, 1] - j[:, 0, 1] * j[:, 1, 0]
    return (
        j[:, 0, 0] * (j[:, 1, 1] * j[:, 2, 2] - j[:, 1, 2] * j[:, 2, 1])
        - j[:, 0, 1] * (j[:, 1, 0] * j[:, 2, 2] - j[:, 1, 2] * j[:, 2, 0])
        + j[:, 0, 2] * (j[:, 1, 0] * j[:, 2, 1] - j[:, 1, 1] * j[:, 2, 0])
    )


def jacobian_determinant(phi: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
    """Full Jacobian determinant of a map ``phi: (B, D, *S)``; returns ``(B, *S)``."""
    check_map(phi, "phi")
    spacing = domain_spacing(phi.shape[2:]) if spacing is None else tuple(spacing)
    return _det(jacobian_matrix(phi, spacing))


def diagonal_jacobian_product(phi: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
    """Product of the diagonal partials ``prod_d d phi_d / d x_d`` (the reference code's
    "Jacobian", *not* a determinant); ``(B, *S)``. Offered only for comparison."""
    check_map(phi, "phi")
    spacing = domain_spacing(phi.shape[2:]) if spacing is None else tuple(spacing)
    j = jacobian_matrix(phi, spacing)
    out = j[:, 0, 0]
    for d in range(1, phi.shape[1]):
        out = out * j[:, d, d]
    return out


def fold_statistics(det: Tensor) -> dict[str, Tensor]:
    """Statistics of a determinant map ``(B, *S)``, each ``(B,)``:
    ``negative_jacobian_voxels`` (count of det <= 0), ``negative_jacobian_fraction`` and
    ``folds`` (sum of ``|det|`` over those voxels)."""
    flat = det.flatten(1)
    bad = flat <= 0
    return {
        "negative_jacobian_voxels": bad.sum(dim=1),
        "negative_jacobian_fraction": bad.to(flat.dtype).mean(dim=1),
        "folds": (flat.abs() * bad).sum(dim=1),
    }
