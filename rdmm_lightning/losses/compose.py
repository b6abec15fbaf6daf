r"""The deformable registration loss, shared by the optimisers (svf/lddmm/rdmm-opt) and the
registration nets: its terms and their weighted total.

``loss = w_sim sim + w_energy sum_k 1/2 <m0_k, v0_k> + w_omt sum_k OMT(w0_k) [+ ...]`` over the
shooting steps ``k`` (one for the optimisers, K for the nets). Callers add their own extra terms
(the nets' weight-range penalty and symmetry, the optimisers' fold barrier).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from .regularizers import omt_penalty, shooting_energy

__all__ = ["registration_terms", "weighted_total"]


def _add(values: Sequence[Tensor]) -> Tensor:
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def registration_terms(
    similarity: Tensor,
    momenta: Sequence[tuple[Tensor, Tensor]],
    spacing: Sequence[float],
    *,
    weights0: Sequence[Tensor] | None = None,
    sigmas: Sequence[float] | None = None,
    omt_power: float = 1.0,
) -> dict[str, Tensor]:
    """Loss terms ``{"similarity", "energy"[, "omt"]}`` (scalars, batch means).

    Args:
        similarity: the similarity term, already evaluated.
        momenta: ``(m0, v0)`` per shooting step, ``(B, D, *S)`` on the grid of ``spacing``
            (the low-resolution grid when shooting at low resolution); at least one.
        spacing: domain spacing of that grid.
        weights0: RDMM weights ``w0: (B, N, *S)`` per step: adds ``omt`` (None: no OMT term).
        sigmas, omt_power: the Gaussian stds of the weights' channels and the OMT exponent.
    """
    if not momenta:
        raise ValueError("momenta must hold at least one (m0, v0) pair")
    terms = {
        "similarity": similarity,
        "energy": _add([shooting_energy(m0, v0, spacing) for m0, v0 in momenta]),
    }
    if weights0 is not None:
        if sigmas is None:
            raise ValueError("sigmas are needed for the OMT term of weights0")
        terms["omt"] = _add([omt_penalty(w0, sigmas, omt_power, spacing) for w0 in weights0])
    return terms


def weighted_total(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_name weights[name] * terms[name]``, added in the order of ``terms``; every term
    needs a weight."""
    missing = [name for name in terms if name not in weights]
    if missing or not terms:
        raise ValueError(f"every loss term needs a weight; none for {missing or 'an empty set'}")
    return _add([float(weights[name]) * value for name, value in terms.items()])
