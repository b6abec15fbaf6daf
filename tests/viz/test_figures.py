import os

import numpy as np
import pytest
import torch
from PIL import Image

from rdmm_lightning.ops.grid import domain_spacing, identity_map
from rdmm_lightning.viz import (
    central_slice,
    figure_to_array,
    grid_image,
    registration_figure,
    save_figure,
    slice_map,
)


def test_grid_image_lines_every_step():
    img = grid_image((17, 9), step=4)[0, 0]
    assert img.shape == (17, 9)
    rows = torch.nonzero(img.all(dim=1)).flatten().tolist()
    cols = torch.nonzero(img.all(dim=0)).flatten().tolist()
    assert rows == [0, 4, 8, 12, 16] and cols == [0, 4, 8]
    assert img.sum() == 5 * 9 + 3 * 17 - 5 * 3


def test_central_slice_and_slice_map_3d():
    x = torch.arange(4 * 5 * 6, dtype=torch.float32).view(4, 5, 6)
    assert np.array_equal(central_slice(x), x[2].numpy())
    assert np.array_equal(central_slice(x, axis=2, index=1), x[:, :, 1].numpy())
    phi = identity_map((4, 5, 6), domain_spacing((4, 5, 6)))[0]
    s = slice_map(phi, axis=1)
    assert s.shape == (2, 4, 6)
    assert np.allclose(s[0], phi[0, :, 2].numpy()) and np.allclose(s[1], phi[2, :, 2].numpy())
    with pytest.raises(ValueError, match="axis"):
        central_slice(x, axis=3)


@pytest.mark.parametrize("shape", [(32, 28), (12, 16, 14)])
def test_registration_figure_writes_png(tmp_path, shape):
    sp = domain_spacing(shape)
    phi = identity_map(shape, sp).clone()
    phi[:, 0] += 0.02 * torch.sin(3 * phi[:, 1])  # smooth, fold-free
    img = torch.rand(1, *shape)
    fig = registration_figure(img, img, img, phi[0], sp, sigma=torch.rand(1, *shape), title="t")
    arr = figure_to_array(fig)
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
    assert arr.std() > 0  # something was drawn
    path = save_figure(fig, tmp_path / "sub" / "overview.png")
    with Image.open(path) as png:
        assert png.size == (arr.shape[1], arr.shape[0])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["overview.png"]  # no temp left


def test_save_figure_permissions_follow_the_umask(tmp_path):
    fig = registration_figure(*(torch.rand(1, 8, 9),) * 3, identity_map((8, 9), (1.0, 1.0))[0])
    old = os.umask(0o027)
    try:
        path = save_figure(fig, tmp_path / "overview.png")
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(old)
    mode = os.stat(path).st_mode & 0o777
    assert mode == os.stat(tmp_path / "other.json").st_mode & 0o777 == 0o640
