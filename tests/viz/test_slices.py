"""Radiological planes from world affines: where R, A and S end up on screen."""

import numpy as np
import pytest

from rdmm_lightning.viz.slices import (
    Orientation,
    canonical_coordinates,
    plane_image,
    plane_spacing,
    view_planes,
)
from tests.viz.orient import restore, restore_index_map, stored_affine

RAS_SHAPE = (7, 9, 5)
RAS_AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])
RAS_AFFINE[:3, 3] = (-4.0, 3.0, 10.0)


def _world_coordinate(axis: int) -> np.ndarray:
    """World coordinate ``axis`` (0 = R, 1 = A, 2 = S) at every voxel of the RAS-stored grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in RAS_SHAPE], indexing="ij"))
    return np.einsum("j,j...->...", RAS_AFFINE[axis, :3], idx) + RAS_AFFINE[axis, 3]


def _planes(x: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    orient = Orientation.of(affine, 3)
    return {p.name: plane_image(orient.apply(x), p) for p in view_planes(3, True)}


def _decreasing(arr: np.ndarray, axis: int) -> bool:
    return bool(np.all(np.diff(arr, axis=axis) < 0))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PSR", "ILA"])
def test_radiological_layout_of_any_storage(codes):
    affine = stored_affine(RAS_AFFINE, codes, RAS_SHAPE)
    r, a, s = (_planes(restore(_world_coordinate(k), codes), affine) for k in range(3))
    # patient's right on the image left: R decreases along the columns (axial, coronal)
    assert _decreasing(r["axial"], 1) and _decreasing(r["coronal"], 1)
    # anterior up in the axial plane, anterior left in the sagittal plane
    assert _decreasing(a["axial"], 0) and _decreasing(a["sagittal"], 1)
    # superior up in the coronal and sagittal planes
    assert _decreasing(s["coronal"], 0) and _decreasing(s["sagittal"], 0)
    # each plane is one slice: the normal's coordinate is constant on it
    assert np.ptp(s["axial"]) == 0 and np.ptp(a["coronal"]) == 0 and np.ptp(r["sagittal"]) == 0
    # mm per pixel (rows, columns) follow the world axes, not the storage
    size = Orientation.of(affine, 3).voxel_size
    np.testing.assert_allclose(size, [1.5, 1.0, 2.0])
    planes = {p.name: p for p in view_planes(3, True)}
    assert plane_spacing(size, planes["axial"]) == (1.0, 1.5)
    assert plane_spacing(size, planes["sagittal"]) == (2.0, 1.0)


def test_voxel_order_without_affine_is_the_array():
    x = np.arange(7 * 9 * 5, dtype=float).reshape(7, 9, 5)
    orient = Orientation.of(None, 3)
    assert not orient.radiological
    views = {p.normal: plane_image(orient.apply(x), p) for p in view_planes(3, False)}
    np.testing.assert_array_equal(views[0], x[3])
    np.testing.assert_array_equal(views[2], x[:, :, 2])
    # negative control: the radiological layout of the identity affine is not the array
    rad = plane_image(Orientation.of(np.eye(4), 3).apply(x), view_planes(3, True)[0])
    assert rad.shape == (9, 7) and not np.array_equal(rad, x[:, :, 2].T)


def test_2d_png_geometry_shows_as_stored():
    """A PNG read through SimpleITK is LPS with identity direction: RAS affine diag(-1, -1);
    ``data`` is (X, Y) = (column, row), so the view is the picture's (row, column) array."""
    x = np.random.default_rng(0).random((6, 4))
    (plane,) = view_planes(2, True)
    view = plane_image(Orientation.of(np.diag([-1.0, -1.0, 1.0, 1.0]), 2).apply(x), plane)
    np.testing.assert_array_equal(view, x.T)
    # a RAS-stored 2D copy of the same picture looks the same
    ras = x[::-1, ::-1]
    affine = np.eye(4)
    affine[:2, 3] = (-5.0, -3.0)
    np.testing.assert_array_equal(plane_image(Orientation.of(affine, 2).apply(ras), plane), x.T)


@pytest.mark.parametrize("codes", ["PSR", "LPS"])
def test_canonical_coordinates_of_a_restored_map(codes):
    rng = np.random.default_rng(1)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in RAS_SHAPE], indexing="ij"))
    index_map = idx + rng.normal(scale=0.3, size=idx.shape)
    affine = stored_affine(RAS_AFFINE, codes, RAS_SHAPE)
    stored = restore_index_map(index_map, codes)
    got = canonical_coordinates(stored, Orientation.of(affine, 3).ornt)
    for w in range(3):
        np.testing.assert_allclose(got[w], index_map[w], atol=1e-12)


def test_degenerate_affine_is_refused():
    affine = np.eye(4)
    affine[1, 1] = 0.0
    with pytest.raises(ValueError, match="degenerate"):
        Orientation.of(affine, 3)
