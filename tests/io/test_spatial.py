"""Index / domain / world conversions and resampling of volumes to working grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdmm_lightning.io import (
    Volume,
    affine_from_itk,
    domain_to_world,
    index_grid,
    index_to_world,
    resample_volume,
    world_to_domain,
    world_to_index,
)
from rdmm_lightning.ops.grid import domain_spacing, identity_map
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
def test_resample_volume_keeps_corners_and_linear_functions(geom):
    shape, aff = tuple(geom["size"]), _affine(geom)
    dim = len(shape)
    world = index_to_world(index_grid(shape), aff)[0]
    # an image that is linear in world coordinates survives linear resampling exactly
    image = Volume((world[0] - 0.5 * world[1] + 3.0).float().unsqueeze(0), aff)
    new_shape = tuple(max(2, n // 2 + 1) for n in shape)
    small = resample_volume(image, new_shape)
    assert small.shape == new_shape and small.data.dtype == torch.float32
    corners = [tuple(c) for c in np.ndindex(*(2,) * dim)]
    for c in corners:
        old = torch.tensor([(n - 1) * ci for n, ci in zip(shape, c)], dtype=torch.float64)
        new = torch.tensor([(m - 1) * ci for m, ci in zip(new_shape, c)], dtype=torch.float64)
        np.testing.assert_allclose(
            index_to_world(new[None], small.affine), index_to_world(old[None], aff), atol=1e-10
        )
    w_small = index_to_world(index_grid(new_shape), small.affine)[0]
    torch.testing.assert_close(
        small.data[0].double(), w_small[0] - 0.5 * w_small[1] + 3.0, atol=1e-4, rtol=0
    )
    # voxel i of the new grid sits at old index i (n - 1) / (m - 1)
    i = torch.tensor([[1.0] * dim], dtype=torch.float64)
    scale = torch.tensor([(n - 1) / (m - 1) for n, m in zip(shape, new_shape)])
    np.testing.assert_allclose(
        index_to_world(i, small.affine), index_to_world(i * scale, aff), atol=1e-10
    )


def test_resample_labels_nearest():
    aff = _affine(TARGET_3D)
    labels = torch.randint(0, 4, (1, 20, 24, 16))
    vol = Volume(labels, aff, "lab.nii.gz", "int16")
    small = resample_volume(vol, (10, 12, 8))
    assert small.data.dtype == torch.int64 and small.file_dtype == "int16"
    assert set(small.data.unique().tolist()) <= set(labels.unique().tolist())
    assert small.data[0, 0, 0, 0] == labels[0, 0, 0, 0]
    assert small.data[0, -1, -1, -1] == labels[0, -1, -1, -1]
    # upsampling then downsampling back to the original grid is the identity
    big = resample_volume(vol, (39, 47, 31))
    assert torch.equal(resample_volume(big, (20, 24, 16)).data, labels)
    assert torch.equal(resample_volume(vol, (20, 24, 16)).data, labels)
