"""The Grid: index / domain / world conversions, domain spacing per mode, resizing, comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdmm_lightning.grid import (
    Grid,
    domain_to_world,
    index_grid,
    index_to_world,
    inside_itk_buffer,
    ras_affine,
    world_to_domain,
    world_to_index,
)
from rdmm_lightning.io import affine_from_itk
from rdmm_lightning.ops.grid import domain_spacing, identity_map, low_res_shape
from tests.io.geometry import SOURCE_2D, TARGET_3D


def _affine(geom):
    return affine_from_itk(geom["origin"], geom["spacing"], geom["direction"])


@pytest.mark.parametrize("geom", [TARGET_3D, SOURCE_2D])
def test_domain_world_conversions(geom):
    shape, aff = geom["size"], _affine(geom)
    dim = len(shape)
    h = domain_spacing(shape)
    ident = identity_map(shape, h, dtype=torch.float64)
    world = domain_to_world(ident, aff, h)
    np.testing.assert_allclose(world, index_to_world(index_grid(shape), aff), atol=1e-12)
    # voxel (i, j, k) -> affine @ (i, j, k, 1) (2D: in-plane part of the affine)
    idx = torch.tensor([2, 3, 1][:dim])
    expected = aff[:dim, :dim] @ idx.double().numpy() + aff[:dim, 3]
    np.testing.assert_allclose(world[(0, slice(None), *idx)], expected, atol=1e-12)
    # inverses, (B, D, *S) and (N, D) layouts, torch dtype kept, numpy in -> numpy out
    back = world_to_domain(world.float(), aff, h)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, ident.float(), atol=1e-5, rtol=0)
    pts = np.random.default_rng(0).random((7, dim)) * 50
    out = world_to_index(pts, aff)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(index_to_world(out, aff), pts, atol=1e-10)
    np.testing.assert_allclose(
        domain_to_world(world_to_domain(pts, aff, h), aff, h), pts, atol=1e-10
    )
    with pytest.raises(ValueError):
        domain_to_world(pts, aff, h[:-1] if dim == 3 else (*h, 1.0))


@pytest.mark.parametrize("geom", [TARGET_3D, SOURCE_2D])
def test_grid_methods_are_the_point_functions(geom):
    shape, aff = tuple(geom["size"]), _affine(geom)
    grid = Grid.from_affine(shape, aff, "physical")
    assert grid.dim == len(shape) and grid.shape == shape
    np.testing.assert_allclose(grid.voxel_size_mm, geom["spacing"], atol=1e-12)
    h = grid.domain_spacing
    assert h == domain_spacing(shape, "physical", grid.voxel_size_mm)
    world = grid.world_points()
    assert world.dtype == torch.float64 and world.shape == (1, len(shape), *shape)
    torch.testing.assert_close(world, index_to_world(index_grid(shape), aff), rtol=0, atol=0)
    torch.testing.assert_close(
        grid.world_to_domain(world), identity_map(shape, h, dtype=world.dtype)
    )
    torch.testing.assert_close(grid.domain_to_world(grid.world_to_domain(world)), world)
    torch.testing.assert_close(grid.world_to_index(grid.index_to_world(world)), world)
    assert grid.identity_map(dtype=torch.float64) is identity_map(shape, h, dtype=torch.float64)


def test_domain_spacing_per_mode():
    aff = ras_affine((2.0, 1.0, 3.0))
    parity = Grid.from_affine((11, 21, 6), aff)
    assert parity.spacing_mode == "parity" and parity.domain_spacing == (0.1, 0.05, 0.2)
    physical = Grid.from_affine((11, 21, 6), aff, "physical")
    h = physical.domain_spacing
    assert max(hd * (n - 1) for hd, n in zip(h, (11, 21, 6))) == pytest.approx(1.0)
    assert h[0] / h[1] == pytest.approx(2.0) and h[2] / h[1] == pytest.approx(3.0)
    # a given domain spacing is kept as is (parity when None), and checked
    given = Grid.from_domain_spacing((11, 21, 6), (0.5, 0.5, 0.5))
    assert given.spacing_mode is None and given.domain_spacing == (0.5, 0.5, 0.5)
    assert Grid.from_domain_spacing((11, 5)).domain_spacing == domain_spacing((11, 5))
    with pytest.raises(ValueError, match="spacing must have 2 positive entries"):
        Grid.from_domain_spacing((11, 5), (0.1, -1.0))
    with pytest.raises(ValueError, match="spacing must be a sequence of 2 numbers"):
        Grid.from_domain_spacing((11, 5), 0.1)
    with pytest.raises(ValueError, match="spacing_mode must be one of parity, physical"):
        Grid.from_affine((11, 5), None, "voxel")
    with pytest.raises(ValueError, match="shape must have 2 or 3 entries"):
        Grid.from_affine((11,))
    with pytest.raises(ValueError, match="grid shape"):
        Grid.from_domain_spacing((11, 1), (0.1, 0.1))


@pytest.mark.parametrize("mode", ["parity", "physical", None])
def test_resize_keeps_the_field_of_view_and_the_domain(mode):
    aff = _affine(TARGET_3D)
    shape, new = tuple(TARGET_3D["size"]), (9, 13, 31)
    if mode is None:
        grid = Grid.from_domain_spacing(shape, (0.03, 0.07, 0.011), aff)
    else:
        grid = Grid.from_affine(shape, aff, mode)
    small = grid.resize(new)
    assert small.shape == new and small.spacing_mode == grid.spacing_mode
    # first and last voxel centres keep their world positions; the domain covers the same box
    for corner in np.ndindex(2, 2, 2):
        old_i = torch.tensor([[(n - 1) * c for n, c in zip(shape, corner)]], dtype=torch.float64)
        new_i = torch.tensor([[(m - 1) * c for m, c in zip(new, corner)]], dtype=torch.float64)
        torch.testing.assert_close(small.index_to_world(new_i), grid.index_to_world(old_i))
    extent = [h * (n - 1) for h, n in zip(grid.domain_spacing, shape)]
    assert [h * (m - 1) for h, m in zip(small.domain_spacing, new)] == pytest.approx(extent)
    world = small.world_points()
    torch.testing.assert_close(grid.world_to_domain(world), small.world_to_domain(world))
    if mode is not None:  # the mode's spacing of the new grid itself
        assert small == Grid.from_affine(new, small.affine, mode)
    # low-res grids: low_res_shape sizes
    assert grid.low_res(0.5).shape == low_res_shape(shape, 0.5)
    with pytest.raises(ValueError, match="3 entries"):
        grid.resize((4, 4))


def test_resize_of_a_given_spacing_rescales_it():
    """The multi-scale plans and the low-resolution shooting grids rescale a given domain
    spacing by (n - 1) / (m - 1), bit for bit (even to the same shape)."""
    h = (0.1, 0.3)
    grid = Grid.from_domain_spacing((4, 6), h)
    assert grid.resize((7, 11)).domain_spacing == (0.1 * 3 / 6, 0.3 * 5 / 10)
    assert grid.resize((4, 6)).domain_spacing == (0.1 * 3 / 3, 0.3 * 5 / 5)


def test_comparisons():
    aff = _affine(TARGET_3D)
    shape = tuple(TARGET_3D["size"])
    grid = Grid.from_affine(shape, aff)
    assert grid == Grid.from_affine(shape, aff.copy()) and hash(grid) == hash(
        Grid.from_affine(shape, aff.copy())
    )
    assert grid != Grid.from_affine(shape, aff, "physical")  # same voxels, other domain
    assert grid.same_as(Grid.from_affine(shape, aff, "physical"))
    moved = aff.copy()
    moved[0, 3] += 1e-7
    assert grid.same_as(Grid.from_affine(shape, moved)) and grid != Grid.from_affine(shape, moved)
    moved[0, 3] += 1e-3
    assert not grid.same_as(Grid.from_affine(shape, moved))
    assert grid.affine_distance(Grid.from_affine(shape, moved)) == pytest.approx(1e-3, rel=1e-3)
    assert not grid.same_as(Grid.from_affine((20, 24, 15), aff))
    # the affine is a read-only copy
    assert not grid.affine.flags.writeable
    aff[0, 0] = 99.0
    assert grid.affine[0, 0] != 99.0


def test_ras_affine():
    aff = ras_affine((0.5, 2.0), (1.0, -2.0))
    np.testing.assert_array_equal(aff, [[0.5, 0, 0, 1], [0, 2, 0, -2], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert Grid.from_affine((5, 6), aff).voxel_size_mm == (0.5, 2.0)
    with pytest.raises(ValueError, match="voxel_size_mm"):
        ras_affine((1.0, 0.0))


def test_inside_itk_buffer_half_a_voxel_both_layouts():
    """ITK's buffer: indices in [-0.5, n - 0.5] per axis count as inside, the next step out
    does not; (N, D) and (B, D, *S) layouts, numpy in numpy out."""
    shape = (4, 3)
    pts = torch.tensor(
        [[-0.5, 0.0], [3.5, 2.5], [-0.5001, 1.0], [1.0, 2.5001], [2.0, 1.0]], dtype=torch.float64
    )
    expected = [[True], [True], [False], [False], [True]]
    assert inside_itk_buffer(pts, shape).tolist() == expected
    assert Grid.from_affine(shape).inside_itk_buffer(pts).tolist() == expected
    np_out = inside_itk_buffer(pts.numpy(), shape)
    assert isinstance(np_out, np.ndarray) and np_out.tolist() == expected
    grid = pts.T.reshape(1, 2, 5, 1)
    assert inside_itk_buffer(grid, shape).reshape(-1).tolist() == [e[0] for e in expected]
    with pytest.raises(ValueError, match="shape must have 2 entries"):
        inside_itk_buffer(pts, (4, 3, 2))
