"""The registration loss shared by the optimisers and the nets: terms and weighted total."""

import pytest
import torch

from rdmm_lightning.losses import omt_penalty, shooting_energy
from rdmm_lightning.losses.compose import registration_terms, weighted_total


def _fields(seed: int):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(2, 2, 6, 5, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 6, 5, generator=g, dtype=torch.float64)
    w = torch.rand(2, 3, 6, 5, generator=g, dtype=torch.float64)
    return m, v, w


def test_terms_sum_over_steps():
    sp, sigmas = (0.2, 0.25), (0.05, 0.1, 0.2)
    (m1, v1, w1), (m2, v2, w2) = _fields(0), _fields(1)
    sim = torch.tensor(0.3, dtype=torch.float64)
    terms = registration_terms(
        sim, [(m1, v1), (m2, v2)], sp, weights0=[w1, w2], sigmas=sigmas, omt_power=2.0
    )
    assert list(terms) == ["similarity", "energy", "omt"]
    assert terms["similarity"] is sim
    energy = shooting_energy(m1, v1, sp) + shooting_energy(m2, v2, sp)
    omt = omt_penalty(w1, sigmas, 2.0, sp) + omt_penalty(w2, sigmas, 2.0, sp)
    assert torch.equal(terms["energy"], energy)
    assert torch.equal(terms["omt"], omt)
    assert list(registration_terms(sim, [(m1, v1)], sp)) == ["similarity", "energy"]
    with pytest.raises(ValueError, match="at least one"):
        registration_terms(sim, [], sp)
    with pytest.raises(ValueError, match="sigmas"):
        registration_terms(sim, [(m1, v1)], sp, weights0=[w1])


def test_weighted_total_in_order_and_every_term_weighted():
    terms = {"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(4.0)}
    total = weighted_total(terms, {"a": 1.0, "b": 0.5, "c": 0.25, "unused": 9.0})
    assert float(total) == 3.0
    # a weight of 0 keeps a term in the graph with no effect; an unweighted term is an error
    assert float(weighted_total(terms, {"a": 0.0, "b": 0.0, "c": 1.0})) == 4.0
    with pytest.raises(ValueError, match="none for \\['c'\\]"):
        weighted_total(terms, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="empty"):
        weighted_total({}, {"a": 1.0})
