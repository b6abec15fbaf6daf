r"""The image-matching force: the descent direction of the sum of squared differences at the
identity, a network input that carries the pair's mismatch in momentum form.

For ``E(v) = 1/2 sum (I o (id - t v) - J)^2`` the derivative at ``t = 0`` is
``dE/dt = -sum (I - J) grad I . v``, so ``f = (I - J) grad I`` is the steepest-descent velocity
(momentum) for the pull-back warp ``I o phi^{-1}`` used throughout the library. The symmetric
form ``(I - J) (grad I + grad J) / 2`` (efficient second-order minimisation, as in demons) is
used: it does not vanish where only the target has an edge. Gradients are in domain units
(``spacing``), so ``f`` has the units of the library's momenta.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .finite_differences import gradient

__all__ = ["image_force"]


def image_force(moving: Tensor, target: Tensor, spacing: Sequence[float]) -> Tensor:
    """``f = (moving - target) * (grad moving + grad target) / 2``, ``(B, D, *S)``.

    Args:
        moving, target: ``(B, 1, *S)`` images on the same grid.
        spacing: domain spacing of that grid, ``D`` entries.

    A small positive multiple of ``f`` as initial momentum decreases the squared difference of
    ``moving o phi^{-1}`` and ``target`` (zero for identical images).
    """
    dim = len(spacing)
    if moving.shape != target.shape or moving.dim() != dim + 2 or moving.shape[1] != 1:
        raise ValueError(
            f"moving and target must both be (B, 1, *S) with {dim} spatial dims; got "
            f"{tuple(moving.shape)} and {tuple(target.shape)}"
        )
    grad = 0.5 * (gradient(moving, spacing) + gradient(target, spacing))[:, 0]
    return (moving - target) * grad
