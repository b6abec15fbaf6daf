"""svf/lddmm/rdmm-opt on tiny synthetic pairs: similarity drops, maps stay regular, fields are
consistent (initial maps, predefined pre-weights, sigma maps)."""

import pytest
import torch

from rdmm_lightning.losses import lncc_loss
from rdmm_lightning.metrics import fold_statistics, jacobian_determinant
from rdmm_lightning.ops.affine import affine_to_map, invert_affine
from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.ops.smoothing import local_sigma, smooth_pre_weights
from rdmm_lightning.ops.warp import compose_maps, warp_image
from rdmm_lightning.optimize import optimize_deformable
from rdmm_lightning.shooting import SolverOptions

from .images import deformed_pair, known_affine

SIGMAS = (0.08, 0.12, 0.16)
FAST = dict(
    sigmas=SIGMAS,
    scales=(0.5, 1.0),
    iterations=(8, 6),
    similarity_kwargs={"window": 5},
    solver=SolverOptions("rk4", 5),
)


def _lncc(a, b):
    return float(lncc_loss(a, b, window=5))


@pytest.mark.parametrize("model", ["svf", "lddmm", "rdmm"])
@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_models_lower_similarity(model, shape):
    src, tgt = deformed_pair(shape)
    before = _lncc(src, tgt)
    res = optimize_deformable(src, tgt, model, **FAST)
    assert res.stopped is None
    after = _lncc(res.warped, tgt)
    assert after < 0.6 * before, (before, after)
    dim = len(shape)
    assert res.phi_inv.shape == (1, dim, *shape)
    assert res.phi.shape == (1, dim, *shape)
    assert res.warped.shape == src.shape
    assert res.extras["m0"].shape[:2] == (1, dim)
    assert res.history and res.history[0]["iteration"] == 0
    assert {"loss", "similarity", "energy", "scale"} <= set(res.history[-1])
    if model == "lddmm":
        stats = fold_statistics(jacobian_determinant(res.phi_inv, res.spacing))
        assert int(stats["negative_jacobian_voxels"][0]) == 0
    if model == "rdmm":
        assert res.sigma_t0.shape == res.sigma_t1.shape == (1, 1, *shape)
        assert "omt" in res.history[-1]
        h0 = res.extras["h0"]
        assert torch.allclose(h0.pow(2).sum(1), torch.ones(()), atol=1e-5)
    else:
        assert res.sigma_t0 is None and res.extras["h0"] is None


def test_warped_is_one_warp_of_the_source_and_phi_inverts_phi_inv():
    src, tgt = deformed_pair((32, 32))
    res = optimize_deformable(src, tgt, "lddmm", **FAST)
    sp = res.spacing
    assert torch.allclose(res.warped, warp_image(src, res.phi_inv, sp), atol=1e-6)
    comp = compose_maps(res.phi_inv, res.phi, sp)
    err = (comp - identity_map((32, 32), sp))[..., 4:-4, 4:-4].abs().max()
    assert err < 0.01


def test_initial_map_is_composed():
    """With an affine initial map A (and its inverse), the result is A o psi^{-1} and the forward
    map psi o A^{-1}; a tiny pair misaligned only by A is registered by A alone."""
    shape = (32, 32)
    sp = domain_spacing(shape)
    src, _ = deformed_pair(shape)
    mat = known_affine(2, angle_deg=5.0, scale=1.02, shift=(0.02, -0.01))
    a_map = affine_to_map(mat, shape, sp)
    a_inv = affine_to_map(invert_affine(mat), shape, sp)
    tgt = warp_image(src, a_map, sp)
    res = optimize_deformable(src, tgt, "svf", initial_map=a_map, initial_forward=a_inv, **FAST)
    # psi^{-1} stays near the identity, so the total map stays near A
    assert (res.phi_inv - a_map)[..., 3:-3, 3:-3].abs().max() < 0.01
    assert (res.phi - a_inv)[..., 3:-3, 3:-3].abs().max() < 0.01
    no_fwd = optimize_deformable(src, tgt, "svf", initial_map=a_map, **FAST)
    assert no_fwd.phi is None


def test_predefined_rdmm_uses_the_given_weights():
    shape = (32, 32)
    src, tgt = deformed_pair(shape)
    sp = domain_spacing(shape)
    x = identity_map(shape)
    inside = (((x - 0.5) ** 2).sum(1, keepdim=True) < 0.25**2).float()
    h2_in = torch.tensor([0.1, 0.4, 0.5]).view(1, 3, 1, 1)
    h2_out = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    h = (inside * h2_in + (1 - inside) * h2_out).sqrt()
    res = optimize_deformable(
        src, tgt, "rdmm", regularizer="predefined", pre_weights=h, weight_sigma=0.05, **FAST
    )
    expected = local_sigma(smooth_pre_weights(h, 0.05, sp), SIGMAS)
    assert torch.allclose(res.sigma_t0, expected, atol=1e-5)
    assert "omt" not in res.history[-1]
    # h0 on the parameter grid is the (resampled) given weights, unchanged by the optimisation
    h0 = res.extras["h0"]
    assert h0.shape == (1, 3, 16, 16)
    assert float(h0[0, 2, 0, 0]) == pytest.approx(1.0, abs=1e-3)
    assert float(h0[0, 2, 8, 8]) == pytest.approx(0.5**0.5, abs=1e-2)
    # sigma at t = 1 is the advected map: close to sigma_t0 for a small deformation
    assert (res.sigma_t1 - res.sigma_t0).abs().mean() < 0.01


def test_optimized_rdmm_starts_from_given_pre_weights():
    src, tgt = deformed_pair((32, 32))
    h = torch.zeros(1, 3, 32, 32)
    h[:, 2] = 1.0
    res = optimize_deformable(src, tgt, "rdmm", pre_weights=h, iterations=0, sigmas=SIGMAS)
    assert torch.allclose(res.sigma_t0, torch.full_like(res.sigma_t0, 0.16), atol=1e-3)


def test_fold_terms_and_kept_record():
    src, tgt = deformed_pair((24, 24))
    res = optimize_deformable(src, tgt, "lddmm", **FAST)
    last = res.history[-1]
    assert last["neg_jacobian"] == 0 and "fold_barrier" in last
    assert [k["scale"] for k in res.extras["kept"]] == [0.5, 1.0]
    assert all(k["fold_free"] for k in res.extras["kept"])
    plain = optimize_deformable(src, tgt, "lddmm", fold_penalty=0.0, fold_free=False, **FAST)
    assert "fold_barrier" not in plain.history[-1] and "neg_jacobian" not in plain.history[-1]
    assert plain.extras["kept"][-1]["fold_free"] is None
