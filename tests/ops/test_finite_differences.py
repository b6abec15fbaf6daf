import pytest
import torch

from rdmm_lightning.ops import central_diff, divergence, gradient, identity_map, jacobian_matrix
from rdmm_lightning.ops.grid import domain_spacing


@pytest.mark.parametrize("shape", [(9, 11), (7, 8, 9)])
def test_linear_bc_is_exact_for_affine_fields_everywhere(shape):
    dim = len(shape)
    sp = domain_spacing(shape)
    x = identity_map(shape, dtype=torch.float64)
    a = torch.randn(dim, dim, dtype=torch.float64)
    phi = torch.einsum("ij,bj...->bi...", a, x) + 0.3
    jac = jacobian_matrix(phi, sp)
    expected = a.view(1, dim, dim, *[1] * dim).expand_as(jac)
    torch.testing.assert_close(jac, expected)


def test_central_difference_exact_for_quadratics_inside_and_zero_neumann_border():
    shape = (10, 12)
    sp = domain_spacing(shape)
    x = identity_map(shape, dtype=torch.float64)
    f = (x[:, :1] ** 2) * 3 + x[:, 1:2]  # 3 x0^2 + x1
    d0 = central_diff(f, 0, sp[0], 2, "neumann")
    torch.testing.assert_close(d0[..., 1:-1, :], 6 * x[:, :1, 1:-1, :])
    assert d0[..., 0, :].abs().max() == 0 and d0[..., -1, :].abs().max() == 0
    g = gradient(f, sp, "linear")
    torch.testing.assert_close(g[:, 0, 1], torch.ones_like(g[:, 0, 1]))


def test_divergence_of_known_field():
    shape = (9, 9, 9)
    sp = domain_spacing(shape)
    x = identity_map(shape, dtype=torch.float64)
    v = torch.cat([2 * x[:, :1], -x[:, 1:2], 0.5 * x[:, 2:] ** 2], dim=1)
    div = divergence(v, sp, "linear")
    torch.testing.assert_close(div[..., 1:-1, 1:-1, 1:-1], (1 + x[:, 2:])[..., 1:-1, 1:-1, 1:-1])


def test_central_operator_is_antisymmetric_for_fields_vanishing_at_the_border():
    g = torch.Generator().manual_seed(0)
    f = torch.zeros(1, 1, 12, 10, dtype=torch.float64)
    k = torch.zeros_like(f)
    f[..., 2:-2, 2:-2] = torch.randn(8, 6, generator=g, dtype=torch.float64)
    k[..., 2:-2, 2:-2] = torch.randn(8, 6, generator=g, dtype=torch.float64)
    for axis in (0, 1):
        lhs = (central_diff(f, axis, 0.1, 2) * k).sum()
        rhs = -(f * central_diff(k, axis, 0.1, 2)).sum()
        assert float(lhs - rhs) == pytest.approx(0.0, abs=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="bc"):
        central_diff(torch.zeros(1, 1, 5, 5), 0, 0.1, 2, "periodic")
    with pytest.raises(ValueError, match="at least 3"):
        central_diff(torch.zeros(1, 1, 2, 5), 0, 0.1, 2)
    with pytest.raises(ValueError, match=r"\(B, 2, \*S\)"):
        divergence(torch.zeros(1, 3, 5, 5), (0.1, 0.1))


def _dense(n: int, bc: str) -> torch.Tensor:
    """The (n, n) matrix of the 1D central difference with spacing 1."""
    eye = torch.eye(n, dtype=torch.float64).view(n, 1, n)  # n unit vectors along the axis
    return central_diff(eye, 0, 1.0, 1, bc)[:, 0, :].T


@pytest.mark.parametrize("n", [3, 4, 9])
def test_zero_extension_is_exactly_antisymmetric_and_neumann_is_not(n):
    """Summation by parts for momentum anywhere: D^T = -D for bc="zero", on every row. The
    zero-Neumann operator (negative control) breaks it in the rows next to the border."""
    zero = _dense(n, "zero")
    assert torch.equal(zero.T, -zero)
    assert torch.equal(zero[1:-1], _dense(n, "neumann")[1:-1])  # same interior stencil
    torch.testing.assert_close(zero[0, 1], torch.tensor(0.5, dtype=torch.float64))
    neumann = _dense(n, "neumann")
    assert (neumann.T + neumann).abs().max() == 0.5


@pytest.mark.parametrize("bc", ["neumann", "linear", "zero"])
@pytest.mark.parametrize("axis", [0, 1])
def test_central_diff_custom_backward_matches_gradcheck(bc, axis):
    """The hand-written transpose (and its own transpose) are checked against finite differences."""
    f = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda x: central_diff(x, axis, 0.3, 2, bc)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f,))
    assert torch.autograd.gradgradcheck(fn, (f,))
